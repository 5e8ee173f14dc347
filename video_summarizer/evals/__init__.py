"""Evaluation: captioned frames as dataset items, and experiments run and scored over them."""
