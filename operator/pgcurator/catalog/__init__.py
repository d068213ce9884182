"""Reading the database catalog into plain observation objects the planners consume."""
