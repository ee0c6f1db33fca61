"""abmesh on the Kubernetes API: the Experiment custom resource, its watch, its status and
per-experiment Leases (`abmesh controller --source kubernetes`)."""
