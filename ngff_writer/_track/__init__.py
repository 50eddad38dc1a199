"""Tracking: the completion log that records which units of an image are stored, kept in
the store itself, and which writers are alive and own what.
"""
