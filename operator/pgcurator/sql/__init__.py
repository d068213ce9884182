"""SQL text helpers: quoting and the statement types the planner emits."""
