"""The release id: one name for one model version, the same on every target and build format.

``release_id(project, bundle)`` = ``r-`` + 12 hex digits of a SHA-256 over

- every shipped file (path, executable bit or narrowed mode, content digest: ``Bundle``'s own
  ``content_hash`` rules), except the manifest file itself, and
- the manifest fields that change what the model does or needs (``BEHAVIOUR``): ``model`` (code
  entry point, Python version, requirements), ``env``, the *names* of ``secrets`` (sorted; never
  values), ``resources`` and ``scaling``; a field added later (``ADDED_LATER``) only when it is not at
the default it was added with.

Left out on purpose: ``name`` and ``version`` (identity and format, not behaviour), ``smoke``
(a check run against a release, not part of it: a deploy whose only change is its smoke
cases runs them against the serving release)
and ``targets`` (where a release goes: moving it, ``migrate``, keeps its id). The manifest file is
left out of the file hash for the same reason: its behaviour-changing content is hashed field by
field above, so editing a target's port is not a new model version. What a provider builds from
a release (a build context's content hash, an image digest) is recorded under the id, never
replaces it. Pure: reads no file, imports nothing heavy.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bundle import Bundle
    from .manifest import Manifest, Project

#: The manifest fields a release id covers (see the module docstring for those it does not).
BEHAVIOUR = ("model", "env", "secrets", "resources", "scaling")

#: Fields added after release ids were first handed out, with the default they were added with.
#: At that default they are left out of the hash, so a new mlserve keeps the id of a release
#: deployed by an older one (otherwise every upgrade would redeploy every model).
ADDED_LATER = {("scaling", "max_batch_size"): 32, ("scaling", "max_batch_wait_ms"): 10}


def behaviour(manifest: "Manifest") -> dict[str, Any]:
    """The manifest's behaviour-changing fields, as JSON data (secret names sorted)."""
    data = manifest.model_dump(mode="json")
    out = {key: data.get(key) for key in BEHAVIOUR}
    out["secrets"] = sorted(out["secrets"] or [])
    for (section, key), default in ADDED_LATER.items():
        if out[section].get(key) == default:
            del out[section][key]
    return out


def release_id(project: "Project", bundle: "Bundle") -> str:
    """The id of the model version ``bundle`` (collected from ``project``) is."""
    try:
        manifest_file = project.path.resolve().relative_to(bundle.root.resolve()).as_posix()
    except ValueError:          # the manifest lives outside the shipped tree: not a shipped file
        manifest_file = None
    h = bundle.files_hash(skip=manifest_file)
    h.update(b"\0manifest\0")
    h.update(json.dumps(behaviour(project.manifest), sort_keys=True, separators=(",", ":")).encode())
    return "r-" + h.hexdigest()[:12]
