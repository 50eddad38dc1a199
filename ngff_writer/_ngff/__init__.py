"""NGFF documents: image, label, plate and collection metadata, as JSON, read and written;
finding images in a store; the statistics behind an image's contrast windows.
"""
