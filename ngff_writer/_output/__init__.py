"""The handles a user holds: an output, its declarations and its images; closing outputs
their users did not close; repairing and validating what is in a store.
"""
