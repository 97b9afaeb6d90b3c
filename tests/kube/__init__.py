"""A fake Kubernetes cluster for operator tests: an API server, a kubelet, and a Kopf runner."""
