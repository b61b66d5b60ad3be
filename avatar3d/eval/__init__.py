"""The evaluation video (real | render | error); the image metrics live in render/metrics.py."""
