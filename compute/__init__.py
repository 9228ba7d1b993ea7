"""refute.compute: see DESIGN.md section 1. Grows in later issues."""
