"""Pure planners: desired spec + observed catalog state -> ordered statements."""
