"""Datasets in the ZJU-MoCap layout: the reader and the synthetic dataset generator."""
