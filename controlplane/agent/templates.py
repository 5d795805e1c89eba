"""Swarm's service templates: `--hostname "{{.Node.Hostname}}-{{.Service.Name}}"` and
`--env NAME={{.Task.Slot}}` are Go templates the node expands for each task (swarmkit's
template.ExpandContainerSpec), over the fields of the service, the node and the task.

Only field references (`{{.Node.Hostname}}`, spaces allowed inside the braces) are expanded;
a reference to another field or any other template action fails the task with an error that
lists the fields there are, where Swarm would fail it with Go's template error.
"""

from __future__ import annotations

import re

from controlplane.pb.objects_pb2 import NodeDescription, Task
from controlplane.store.kinds import name_of

_ACTION = re.compile(r"\{\{(.*?)\}\}")


class TemplateError(ValueError):
    """A template the node cannot expand; its text is the task's error."""


def template_fields(task: Task, node: NodeDescription) -> dict[str, str]:
    """The values a task's templates can name, by their Go path."""
    return {
        ".Service.ID": task.service_id,
        ".Service.Name": task.spec.annotations.name,
        ".Node.ID": task.node_id,
        ".Node.Hostname": node.hostname,
        ".Node.Platform.OS": node.os,
        ".Node.Platform.Architecture": node.architecture,
        ".Task.ID": task.id,
        ".Task.Name": name_of(task),
        ".Task.Slot": str(task.slot) if task.slot else task.node_id,
    }


def expand(text: str, fields: dict[str, str], where: str) -> str:
    """`text` with every `{{.Field}}` replaced; `where` names the setting in errors."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name not in fields:
            raise TemplateError(
                f"failed to expand the template {match.group(0)} in {where}: Swarm's templates "
                f"name one of {', '.join('{{' + f + '}}' for f in fields)}"
            )
        return fields[name]

    return _ACTION.sub(value, text)
