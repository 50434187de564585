"""The shipped model organism: a small GPT-2-style model with short-context SAEs."""
