"""Where input is checked, and how a refusal reads (docs/design.md section 5)."""
