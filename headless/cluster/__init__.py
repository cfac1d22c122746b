"""The persona service on a Ray cluster (`persona deploy`, docs/scaling.md).

`settings` (ClusterConfig: ServerConfig + the cluster), `checkpoint` (session state kept
outside the replicas), `replica_service` (PersonaService + checkpoints, restore, leases),
`replica` (the Ray Serve deployment), `ingress` (the aiohttp front door), `deploy`.
Needs the `cluster` extra (`ray[serve]`); nothing else in the package imports this one.
"""
