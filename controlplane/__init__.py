"""The control plane: experiments' status, the rollout controller, route targets and
routers, leases."""
