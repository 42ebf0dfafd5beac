"""Training side: dataset manifests, flow labels, trace import, recording, fitting."""
