"""``spl task …``: tasks are threads opened by a task INTEND (seed 003, issue 12).

Every command is one request to the daemon (``/v1/tasks``), which writes the record the task fold reads and
answers the task as the fold has it after the commit; nothing here computes a status. ``-o json`` prints the
daemon's answer as sent (``.thread``, ``.alias``, ``.status``; ``show`` adds the thread's fold under ``.fold``).

A task is named by its alias (``TASK-0042``) or its thread id (``th_`` + 64 hex). Every string a client or peer
wrote (titles, reasons, actors) goes through :func:`spl.cli.output.safe` before it reaches the terminal.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from spl.cli.answers import ForkAnswer, JoinStatus, TaskAnswer, TaskList, TreeNode
from spl.cli.client import DaemonClient
from spl.cli.common import OUTPUT, URL, call, client_for, wants_json
from spl.cli.output import emit_json, emit_list, is_wide, rfc3339, safe, table

__all__ = ["parse_join_option", "print_fork", "task_app"]

task_app = typer.Typer(help="Tasks: threads opened by a task INTEND (seed 003).", no_args_is_help=True)

TASK = typer.Argument(..., help="The task's alias (TASK-0042) or thread id (th_ + 64 hex).")
JOIN = typer.Option(
    None, "--join", help="Join predicate of the parent: all, any, k_of_n:K, or cel:<expression> (default all)."
)


def parse_join_option(value: str | None) -> Any:
    """``--join`` as the wire form: the daemon validates it (``spl.core.joins``), this only splits shorthands."""
    if value is None:
        return None
    if value.startswith("cel:"):
        return {"mode": "cel", "expr": value[4:]}
    return value  # "all", "any" and "k_of_n:K" are accepted as strings by the daemon


def _key(task: str) -> str:
    return quote(task, safe="")


def _show(task: TaskAnswer) -> None:
    rows: list[tuple[str, Any]] = [
        ("alias", task.alias),
        ("thread", task.thread),
        ("status", task.status),
        ("title", task.title),
        ("assignee", task.assignee or "-"),
    ]
    rows += [(label, value) for label, value in (("domain", task.domain), ("priority", task.priority)) if value]
    if task.labels:
        rows.append(("labels", ", ".join(task.labels)))
    rows += [("criterion", item) for item in task.criteria]
    rows += [(label, value) for label, value in (("reason", task.reason), ("parent", task.parent)) if value]
    rows += [("records", task.record_count), ("opened by", task.opened_by or "-")]
    if task.closed_by:
        rows.append(("closed by", task.closed_by))
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        typer.echo(f"{label + ':':<{width}} {safe(value)}")


def _answer(client: DaemonClient, method: str, path: str, output: str, body: Any = None) -> TaskAnswer:
    reply = call(client, method, path, json_body=body)
    task = reply.into(TaskAnswer)
    if wants_json(output):
        emit_json(reply.payload)
    return task


@task_app.command("add")
def add(
    title: str = typer.Argument(..., help="What the task is for (its goal)."),
    alias: str | None = typer.Option(None, "--alias", help="Alias (default: the next TASK-NNNN)."),
    assignee: str | None = typer.Option(None, "--assignee", help="Who does it (a DID)."),
    priority: str | None = typer.Option(None, "--priority", help="Priority, e.g. P1."),
    label: list[str] | None = typer.Option(None, "--label", help="A label (repeatable)."),
    criteria: list[str] | None = typer.Option(None, "--criteria", help="A success criterion (repeatable)."),
    domain: str | None = typer.Option(None, "--domain", help="Domain, e.g. infra."),
    join: str | None = JOIN,
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Open a task (a task INTEND on a thread minted from its alias).

    Example: spl task add "Ship v2" --alias TASK-0042 --priority P1 --label release --criteria "CI green"
    """
    body: dict[str, Any] = {"title": title}
    for key, value in (("alias", alias), ("assignee", assignee), ("priority", priority), ("domain", domain)):
        if value is not None:
            body[key] = value
    if label:
        body["labels"] = label
    if criteria:
        body["criteria"] = criteria
    if join is not None:
        body["join"] = parse_join_option(join)
    task = _answer(client_for(url), "POST", "/v1/tasks", output, body)
    if not wants_json(output):
        typer.echo(f"added {safe(task.alias)} {safe(task.thread)} ({safe(task.status)})")


@task_app.command("list")
def list_tasks(
    status: str | None = typer.Option(None, "--status", help="Only this status (open, active, …, cancelled)."),
    assignee: str | None = typer.Option(None, "--assignee", help="Only tasks assigned to this DID."),
    label: str | None = typer.Option(None, "--label", help="Only tasks with this label."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="At most this many tasks."),
    cursor: str | None = typer.Option(
        None, "--cursor", help="Start after this page: the next_cursor of the previous page (-o json)."
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """List tasks, newest first.

    Example: spl task list --status active --label release -o json
    """
    params = {"status": status, "assignee": assignee, "label": label, "limit": limit, "cursor": cursor}
    reply = call(client_for(url), "GET", "/v1/tasks", params=params)
    tasks = reply.into(TaskList)
    if wants_json(output):
        emit_list(reply.payload["data"], has_more=tasks.has_more, next_cursor=tasks.next_cursor)
        return
    headers = ["ALIAS", "STATUS", "ASSIGNEE", "PRIORITY", "TITLE", "THREAD"]
    rows: list[list[object]] = [
        [t.alias, t.status, t.assignee or "-", t.priority or "-", t.title, t.thread] for t in tasks.data
    ]
    if is_wide(output):  # -o wide: what else a task has to show
        headers += ["LABELS", "DOMAIN", "PARENT", "RECORDS", "CREATED", "UPDATED"]
        for row, t in zip(rows, tasks.data, strict=True):
            row += [
                ",".join(t.labels) or "-",
                t.domain or "-",
                t.parent or "-",
                t.record_count,
                rfc3339(t.created_at) or "-",
                rfc3339(t.updated_at) or "-",
            ]
    table(rows, headers)
    if tasks.has_more:
        typer.echo(f"(more tasks: raise --limit above {limit}, or pass --cursor {safe(tasks.next_cursor)})")


@task_app.command("show")
def show(task: str = TASK, output: str = OUTPUT, url: str | None = URL) -> None:
    """Show a task: its fields, status and its thread's participants.

    Example: spl task show TASK-0042 -o json | jq -r '.thread'
    """
    reply = call(client_for(url), "GET", f"/v1/tasks/{_key(task)}")
    answer = reply.into(TaskAnswer)
    if wants_json(output):
        emit_json(reply.payload)
        return
    _show(answer)
    fold = reply.payload.get("fold")
    if isinstance(fold, dict):
        listed = fold.get("participants")
        participants = listed if isinstance(listed, list) else []
        typer.echo(f"thread state: {safe(fold.get('state'))}")
        for participant in participants:
            if isinstance(participant, dict):
                typer.echo(
                    f"  {safe(participant.get('actor'))}  {safe(participant.get('role'))}  "
                    f"{safe(participant.get('record_count'))} records"
                )


def _event(task: str, event: str, output: str, url: str | None, **fields: str | None) -> None:
    body: dict[str, Any] = {"event": event, **{key: value for key, value in fields.items() if value is not None}}
    answer = _answer(client_for(url), "POST", f"/v1/tasks/{_key(task)}/events", output, body)
    if not wants_json(output):
        typer.echo(f"{safe(answer.alias)} {safe(answer.status)}")


REASON = typer.Option(None, "--reason", help="Why (kept with the record).")


@task_app.command("start")
def start(task: str = TASK, reason: str | None = REASON, output: str = OUTPUT, url: str | None = URL) -> None:
    """Mark a task active (a DO with task_event start).

    Example: spl task start TASK-0042
    """
    _event(task, "start", output, url, reason=reason)


@task_app.command("done")
def done(
    task: str = TASK,
    summary: str | None = typer.Option(None, "--summary", help="What was achieved (the result a parent sees)."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Mark a task done (a KNOW fulfilling its opening INTEND).

    Example: spl task done TASK-0042 --summary "deployed to prod"
    """
    _event(task, "done", output, url, summary=summary)


@task_app.command("fail")
def fail(task: str = TASK, reason: str | None = REASON, output: str = OUTPUT, url: str | None = URL) -> None:
    """Mark a task failed (a KNOW with task_event fail).

    Example: spl task fail TASK-0042 --reason "tests red"
    """
    _event(task, "fail", output, url, reason=reason)


@task_app.command("cancel")
def cancel(task: str = TASK, reason: str | None = REASON, output: str = OUTPUT, url: str | None = URL) -> None:
    """Cancel a task (a DO cancelling its opening INTEND).

    Example: spl task cancel TASK-0042 --reason "superseded"
    """
    _event(task, "cancel", output, url, reason=reason)


@task_app.command("block")
def block(task: str = TASK, reason: str | None = REASON, output: str = OUTPUT, url: str | None = URL) -> None:
    """Mark a task blocked (a KNOW with task_event block).

    Example: spl task block TASK-0042 --reason "waiting on review"
    """
    _event(task, "block", output, url, reason=reason)


@task_app.command("reopen")
def reopen(task: str = TASK, reason: str | None = REASON, output: str = OUTPUT, url: str | None = URL) -> None:
    """Reopen a task (an INTEND with task_event reopen): the only way out of done, failed or cancelled.

    Example: spl task reopen TASK-0042 --reason "regression"
    """
    _event(task, "reopen", output, url, reason=reason)


@task_app.command("comment")
def comment(
    task: str = TASK,
    text: str = typer.Argument(..., help="The comment."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Comment on a task (a KNOW with task_event comment; the status does not change).

    Example: spl task comment TASK-0042 "rollout at 50%"
    """
    _event(task, "comment", output, url, text=text)


def print_fork(fork: ForkAnswer) -> None:
    typer.echo(f"forked {len(fork.children)} from {safe(fork.parent)} (join {safe(fork.join)})")
    for child in fork.children:
        typer.echo(f"  {safe(child.alias or '-')}  {safe(child.thread)}  {safe(child.goal or '')}")


@task_app.command("fan-out")
def fan_out(
    parent: str = typer.Argument(..., help="The parent task (alias or thread id)."),
    goals: list[str] = typer.Argument(..., help="One goal per child task (1-64)."),
    join: str | None = JOIN,
    assignee: str | None = typer.Option(None, "--assignee", help="Assign every child task to this DID."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Fork child tasks from a task; the parent closes by itself when its join predicate holds.

    Example: spl task fan-out TASK-0042 "build image" "run migrations" --join all
    """
    body: dict[str, Any] = {"goals": goals}
    if join is not None:
        body["join"] = parse_join_option(join)
    if assignee is not None:
        body["assignee"] = assignee
    reply = call(client_for(url), "POST", f"/v1/tasks/{_key(parent)}/fan-out", json_body=body)
    fork = reply.into(ForkAnswer)
    if wants_json(output):
        emit_json(reply.payload)
        return
    print_fork(fork)


def print_tree(node: TreeNode, depth: int = 0) -> None:
    outcome = f"  → {safe(node.outcome.status)}" if node.outcome and node.outcome.status else ""
    label = f"{safe(node.alias)} " if node.alias else ""
    typer.echo(f"{'  ' * depth}{label}{safe(node.thread)}  {safe(node.status or '-')}{outcome}")
    for child in node.children:
        print_tree(child, depth + 1)


@task_app.command("tree")
def tree(task: str = TASK, output: str = OUTPUT, url: str | None = URL) -> None:
    """Show the sub-thread tree under a task (at most 8 levels, 1000 threads).

    Example: spl task tree TASK-0042
    """
    reply = call(client_for(url), "GET", f"/v1/tasks/{_key(task)}/tree")
    root = reply.into(TreeNode)
    if wants_json(output):
        emit_json(reply.payload)
        return
    print_tree(root)
    if root.truncated:
        typer.echo("(tree truncated: deeper than 8 levels or more than 1000 threads)")


def print_join(status: JoinStatus) -> None:
    decision = status.decision
    typer.echo(f"thread:   {safe(status.thread)} ({safe(status.state)})")
    typer.echo(f"join:     {safe(status.join)}")
    typer.echo(
        f"decision: {safe(decision.verdict)} ({decision.accepted} accepted, {decision.rejected} rejected, "
        f"{decision.open} open of {decision.total})"
    )
    if decision.reason:
        typer.echo(f"reason:   {safe(decision.reason)}")
    for child in status.children:
        outcome = child.outcome.status if child.outcome else "open"
        typer.echo(f"  {safe(child.alias or '-')}  {safe(child.thread)}  {safe(child.status)}  → {safe(outcome)}")


@task_app.command("join-status")
def join_status(task: str = TASK, output: str = OUTPUT, url: str | None = URL) -> None:
    """Show a task's join predicate, its children's outcomes and the decision now.

    Example: spl task join-status TASK-0042 -o json
    """
    reply = call(client_for(url), "GET", f"/v1/tasks/{_key(task)}/join")
    status = reply.into(JoinStatus)
    if wants_json(output):
        emit_json(reply.payload)
        return
    print_join(status)
