"""Pretraining: AVID (Cross/Self/Joint), AVID-CMA and Robust-xID."""
