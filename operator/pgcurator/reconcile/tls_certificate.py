"""DbTlsCert's owned cert-manager Certificate: created, kept in line with the spec, never taken over."""

from __future__ import annotations

from typing import Any

from ..errors import CuratorError
from ..limits import DETAIL_TEXT
from ..models.tls import DbTlsCertSpec, IssuerKind
from ..planner import tls as planner
from .context import ReconcileContext
from .outcome import Event

CM_GROUP, CM_VERSION = "cert-manager.io", "v1"


async def ensure_certificate(ctx: ReconcileContext, spec: DbTlsCertSpec) -> dict[str, Any]:
    """Create or correct the owned Certificate; return its readiness for the status."""
    assert spec.certificate is not None and ctx.kube is not None
    ref = spec.certificate.issuer_ref
    if ref.group == CM_GROUP:
        cluster = ref.kind is IssuerKind.ClusterIssuer
        issuer = await ctx.kube.get_object(CM_GROUP, CM_VERSION, "clusterissuers" if cluster else "issuers",
                                           ref.name, None if cluster else ctx.namespace)
        if issuer is None:
            where = "" if cluster else f" in namespace {ctx.namespace}"
            raise CuratorError(f"{ref.kind.value} {ref.name!r} not found{where}: create it or fix "
                               "certificate.issuerRef", reason="IssuerNotFound")
    name = spec.certificate.name or ctx.name
    desired = planner.certificate_manifest(spec, name, ctx.namespace, ctx.body)
    existing = await ctx.kube.get_object(CM_GROUP, CM_VERSION, "certificates", name, ctx.namespace)
    if existing is None:
        existing = await ctx.kube.create_object(CM_GROUP, CM_VERSION, "certificates", ctx.namespace, desired)
        await ctx.event(Event("Normal", "CertificateCreated", f"created cert-manager Certificate {name}"))
    else:
        owners = existing.get("metadata", {}).get("ownerReferences") or []
        if not any(o.get("uid") == ctx.body["metadata"].get("uid") for o in owners):
            raise CuratorError(f"Certificate {name} exists and is not owned by this DbTlsCert: refusing to take it "
                               "over; rename certificate.name or use secretName to follow its Secret",
                               reason="CertificateNotOwned")
        patch = planner.certificate_drift(existing.get("spec") or {}, desired["spec"])
        if patch:
            existing = await ctx.kube.patch_object(CM_GROUP, CM_VERSION, "certificates", ctx.namespace, name,
                                                   {"spec": patch})
            await ctx.event(Event("Normal", "CertificateUpdated",
                                  f"brought Certificate {name} in line: {', '.join(sorted(patch))}"))
    cstatus = existing.get("status") or {}
    ready: dict[str, Any] = next((c for c in cstatus.get("conditions") or [] if c.get("type") == "Ready"), {})
    return {
        "name": name,
        "ready": ready.get("status", "Unknown"),
        "reason": ready.get("reason", ""),
        "message": str(ready.get("message", ""))[:DETAIL_TEXT],
        "notAfter": cstatus.get("notAfter"),
        "renewalTime": cstatus.get("renewalTime"),
        "revision": cstatus.get("revision"),
    }
