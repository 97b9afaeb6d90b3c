"""`selftaught operator`: load cluster credentials, then run Kopf with our handlers."""

from __future__ import annotations

import logging


def run_operator(*, namespaces: list[str], all_namespaces: bool) -> int:
    import kopf
    from kubernetes import config as kube_config

    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    from selftaught.controller import handlers

    if not namespaces and not all_namespaces:
        logging.getLogger(__name__).error("give --namespace NAME (repeatable) or --all-namespaces")
        return 2
    kopf.run(
        clusterwide=all_namespaces,
        namespaces=namespaces,
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects needed
        liveness_endpoint=f"http://0.0.0.0:{handlers.CONFIG.health_port}/healthz" if handlers.CONFIG.health_port else None,
    )
    return 0
