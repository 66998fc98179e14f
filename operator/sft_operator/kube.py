"""Thin helpers over the Kubernetes API: exactly what the handlers need.

Objects go in and come out as plain wire dicts (camelCase, as `kubectl get -o
json` shows them), so the pure builders and status functions never see a
client model. Three rules make every call safe to repeat:

- children are created or, if a first attempt already made them, read back
  (409 Conflict -> GET), and adopted only when they carry our ownerReference;
- status is written with read-modify-write guarded by resourceVersion, retried
  on conflict, and skipped when nothing changed;
- nothing here writes `spec` of a custom resource.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .api import GROUP, KINDS, VERSION
from .rayjob import RAY_GROUP, RAY_VERSION, RAYJOB_KIND, RAYJOB_PLURAL

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"
CONFLICT_RETRIES = 5
# Names the operator's requests in the API server's audit log and metrics (kopf's own say `kopf/VERSION`).
USER_AGENT = "trustdoc-sft-operator"
Obj = dict[str, Any]


class ForeignChildError(RuntimeError):
    """A child's name is taken by an object another owner controls."""


@dataclass(frozen=True)
class Ensured:
    """A child as it is in the cluster, and whether this call created it."""

    obj: Obj
    created: bool


@dataclass(frozen=True)
class StatusUpdate:
    """A status write that happened: the object before and after it."""

    before: Obj
    after: Obj


def _load(response: Any) -> Obj:
    data: Obj = json.loads(response.data)
    return data


def _missing(err: ApiException) -> bool:
    return bool(err.status == 404)


class Kube:
    """The operator's API client (thread-safe; sync handlers run in kopf's thread pool)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        api_client.user_agent = USER_AGENT
        self.api_client = api_client
        # Typed as Any on purpose: bodies go in as wire dicts and come back raw
        # (`_preload_content=False`), never as the client's model classes.
        self.core: Any = client.CoreV1Api(api_client)
        self.batch: Any = client.BatchV1Api(api_client)
        self.custom: Any = client.CustomObjectsApi(api_client)

    @classmethod
    def connect(cls, connections: int | None = None) -> Kube:
        """In a pod: its service account. Elsewhere: $KUBECONFIG (read now, not at import).

        `connections`: how many HTTP connections to keep open (one per handler
        thread, so none is opened and dropped per request); None: the client's default.
        """
        configuration = client.Configuration()
        if connections is not None:
            configuration.connection_pool_maxsize = connections
        if os.path.exists(SERVICE_ACCOUNT_TOKEN) and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return cls(client.ApiClient(configuration))
        kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
        if not api_client.configuration.verify_ssl:
            # The kubeconfig asks for insecure-skip-tls-verify: urllib3 would warn on every request.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return cls(api_client)

    # ------------------------------------------------------------- children

    def ensure_child(self, desired: Obj) -> Ensured:
        """Create `desired`, or return the existing object of that name if we own it."""
        try:
            return Ensured(self._create(desired), created=True)
        except ApiException as err:
            if err.status != 409:
                raise
        existing = self._read(desired)
        owner_uid = desired["metadata"]["ownerReferences"][0]["uid"]
        if controller_uid(existing) != owner_uid:
            kind, name = desired["kind"], desired["metadata"]["name"]
            raise ForeignChildError(f"{kind} {name} already exists and is not owned by this object")
        return Ensured(existing, created=False)

    def _create(self, obj: Obj) -> Obj:
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        if kind == RAYJOB_KIND:
            return _load(
                self.custom.create_namespaced_custom_object(
                    RAY_GROUP, RAY_VERSION, ns, RAYJOB_PLURAL, obj, _preload_content=False
                )
            )
        if kind == "Job":
            return _load(self.batch.create_namespaced_job(ns, obj, _preload_content=False))
        if kind == "ConfigMap":
            return _load(self.core.create_namespaced_config_map(ns, obj, _preload_content=False))
        if kind == "Service":
            return _load(self.core.create_namespaced_service(ns, obj, _preload_content=False))
        raise ValueError(f"cannot create a {kind}")

    def _read(self, obj: Obj) -> Obj:
        ns, name, kind = obj["metadata"]["namespace"], obj["metadata"]["name"], obj["kind"]
        if kind == RAYJOB_KIND:
            return _load(
                self.custom.get_namespaced_custom_object(
                    RAY_GROUP, RAY_VERSION, ns, RAYJOB_PLURAL, name, _preload_content=False
                )
            )
        if kind == "Job":
            return _load(self.batch.read_namespaced_job(name, ns, _preload_content=False))
        if kind == "ConfigMap":
            return _load(self.core.read_namespaced_config_map(name, ns, _preload_content=False))
        if kind == "Service":
            return _load(self.core.read_namespaced_service(name, ns, _preload_content=False))
        raise ValueError(f"cannot read a {kind}")

    # ----------------------------------------------------------------- jobs

    def read_job(self, namespace: str, name: str) -> Obj | None:
        try:
            return _load(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as err:
            if _missing(err):
                return None
            raise

    def read_claim(self, namespace: str, name: str) -> Obj | None:
        """A PersistentVolumeClaim, or None when there is none by that name."""
        try:
            return _load(self.core.read_namespaced_persistent_volume_claim(name, namespace, _preload_content=False))
        except ApiException as err:
            if _missing(err):
                return None
            raise

    def patch_job(self, namespace: str, name: str, patch: Obj) -> Obj:
        return _load(self.batch.patch_namespaced_job(name, namespace, patch, _preload_content=False))

    def patch_run(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patch the Job or RayJob that runs a custom resource."""
        if kind == RAYJOB_KIND:
            return _load(
                self.custom.patch_namespaced_custom_object(
                    RAY_GROUP, RAY_VERSION, namespace, RAYJOB_PLURAL, name, patch, _preload_content=False
                )
            )
        return self.patch_job(namespace, name, patch)

    def pods_of(self, job: Obj) -> list[Obj]:
        """The pods this very Job made (by controller uid: never a namesake's).

        A Job whose status counts no pod yet is answered without a request:
        the Job controller counts each pod it makes (active, ready, finished)
        and that count changes the Job, so its next event lists them. This
        saves a LIST per fresh Job, twice (the reconcile and the Job watcher).
        """
        if not counts_pods(job):
            return []
        selector = f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"
        response = self.core.list_namespaced_pod(
            job["metadata"]["namespace"], label_selector=selector, _preload_content=False
        )
        items: list[Obj] = _load(response).get("items", [])
        return items

    def read_run(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The Job or RayJob that runs a custom resource, or None when it is gone."""
        try:
            return self._read({"kind": kind, "metadata": {"namespace": namespace, "name": name}})
        except ApiException as err:
            if _missing(err):
                return None
            raise

    # -------------------------------------------------------------- rayjobs

    def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether the API server serves this resource (discovery: open to every authenticated client)."""
        try:
            response = self.custom.get_api_resources(group, version, _preload_content=False)
        except ApiException as err:
            if _missing(err):
                return False
            raise
        return any(resource.get("name") == plural for resource in _load(response).get("resources", []))

    def submitter_pods(self, rayjob: Obj) -> list[Obj]:
        """The pods of a RayJob's submitter: the Job KubeRay names after the RayJob and owns."""
        job = self.read_job(rayjob["metadata"]["namespace"], rayjob["metadata"]["name"])
        if job is None or controller_uid(job) != rayjob["metadata"].get("uid"):
            return []
        return self.pods_of(job)

    def ray_head_pods(self, rayjob: Obj) -> list[Obj]:
        """The head pod of a RayJob's Ray cluster (where the driver serves /progress)."""
        cluster = (rayjob.get("status") or {}).get("rayClusterName")
        if not cluster:
            return []
        selector = f"ray.io/cluster={cluster},ray.io/node-type=head"
        response = self.core.list_namespaced_pod(
            rayjob["metadata"]["namespace"], label_selector=selector, _preload_content=False
        )
        items: list[Obj] = _load(response).get("items", [])
        return items

    # ------------------------------------------------------ custom resources

    def read_custom(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            response = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, KINDS[kind].plural, name, _preload_content=False
            )
        except ApiException as err:
            if _missing(err):
                return None
            raise
        return _load(response)

    def update_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        change: Callable[[Obj], Obj | None],
        current: Obj | None = None,
    ) -> StatusUpdate | None:
        """Read the object, let `change` compute its new status, write it if it differs.

        `change` returns the whole new status, or None to leave the object
        alone. A write that loses a race (409) is recomputed from a fresh
        read. Returns None when the object is gone or nothing changed.
        `current` is the object as the caller already holds it (a handler's
        body): the first attempt computes from it instead of reading. Its
        resourceVersion guards the write, so a stale copy costs a 409 and a
        read, never a lost update; and "nothing to change" is only trusted
        from a fresh read.
        """
        plural = KINDS[kind].plural
        for _attempt in range(CONFLICT_RETRIES + 1):
            held = current is not None
            if current is not None:
                current = copy.deepcopy(
                    current
                )  # `change` may edit what it is given; the caller's copy stays as it was
            else:
                current = self.read_custom(kind, namespace, name)
                if current is None:
                    return None
            before = current.get("status") or {}
            after = change(current)
            if after is None or after == before:
                if held:
                    current = None
                    continue
                return None
            updated = {**current, "status": after}
            try:
                response = self.custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, plural, name, updated, _preload_content=False
                )
            except ApiException as err:
                if err.status == 409:
                    current = None
                    continue
                if _missing(err):
                    return None
                raise
            return StatusUpdate(current, _load(response))
        raise RuntimeError(f"{kind} {namespace}/{name}: status kept changing under {CONFLICT_RETRIES} writes")

    # -------------------------------------------------------------- peering

    def ensure_peering(self, name: str, namespaces: tuple[str, ...]) -> list[str]:
        """The kopf peering object(s) replicas coordinate through; returns those created.

        kopf never creates them itself, and a mandatory peering that does not
        exist would keep the operator paused without a word.
        """
        created: list[str] = []
        targets: list[str | None] = list(namespaces) or [None]
        for namespace in targets:
            kind = "KopfPeering" if namespace else "ClusterKopfPeering"
            body = {"apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}", "kind": kind, "metadata": {"name": name}}
            try:
                if namespace:
                    self.custom.create_namespaced_custom_object(
                        PEERING_GROUP, PEERING_VERSION, namespace, "kopfpeerings", body
                    )
                else:
                    self.custom.create_cluster_custom_object(
                        PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", body
                    )
            except ApiException as err:
                if err.status != 409:
                    raise
                continue
            created.append(f"{kind} {namespace + '/' if namespace else ''}{name}")
        return created


def counts_pods(job: Obj) -> bool:
    """Whether a Job's status counts any pod (made, running, finished or going); False for a fresh Job."""
    status = job.get("status") or {}
    counted = ("active", "ready", "succeeded", "failed", "terminating")
    uncounted = status.get("uncountedTerminatedPods") or {}
    return any(int(status.get(field) or 0) > 0 for field in counted) or any(uncounted.values())


def controller_uid(obj: Obj) -> str | None:
    """UID of the object's controlling owner, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def controller_of(obj: Obj) -> tuple[str, str, str] | None:
    """(kind, name, uid) of the custom resource controlling a child, or None if it is not ours."""
    for ref in obj.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("controller") and ref.get("apiVersion") == f"{GROUP}/{VERSION}" and ref.get("kind") in KINDS:
            return str(ref["kind"]), str(ref["name"]), str(ref["uid"])
    return None
