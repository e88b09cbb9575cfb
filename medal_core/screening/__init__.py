"""Checks that decide whether an image gets a melanoma estimate at all: image quality
(`quality`), lesion or not (`ood`), dermoscopic or a plain photo (`modality`), and the
screen every bundle shares, which holds both (`screen`)."""
