"""Storage: opening stores, ngff-writer's own store wrappers, and zarr's private names.

The bottom of the package: it knows zarr, s3fs and obstore, and nothing of images.
"""
