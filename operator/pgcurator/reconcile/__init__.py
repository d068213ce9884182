"""Per-kind reconcile functions: connection in, status out. Kubernetes-agnostic."""
