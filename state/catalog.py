"""Load, validate and check workflow definitions; route event types to workflows.

`load_catalog(path)` reads one YAML file or every `*.yaml` in a folder. Several versions of one
workflow may be loaded at once: new instances start on the newest, running instances keep theirs.
Business calendars come from the `calendars/` folder beside the definitions (or another folder,
for a what-if run); every calendar a definition names must be there.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, Discriminator, Tag, TypeAdapter, ValidationError

from schemas.bounded_read import read_bounded
from schemas.decode import MAX_TIME_MS, MIN_TIME_MS, DecodeRules, Route
from schemas.errors import DefinitionError
from schemas.mapping import FORMATS_FILE
from schemas.payloads.registry import PayloadRegistry
from state.calendar import Calendar
from state.calendar_files import load_calendars
from state.definition import (
    Branch,
    CaseTracking,
    Compensation,
    Deadline,
    Definition,
    InstanceIdRule,
    SlaRule,
    State,
    StateMachine,
)

MAX_FILE_BYTES = 256 * 1024
_MODES = ("state_machine", "case_tracking")


def _mode(document: Any) -> str | None:
    """The `mode` of a document (default `state_machine`), so errors come from one model only."""
    if isinstance(document, dict):
        mode = document.get("mode", "state_machine")
        return mode if isinstance(mode, str) else None
    return getattr(document, "mode", None)


# Tagged by `mode`: a plain union would report every problem twice, once per model.
_ADAPTER: TypeAdapter[Definition] = TypeAdapter(
    Annotated[
        Annotated[StateMachine, Tag("state_machine")]
        | Annotated[CaseTracking, Tag("case_tracking")],
        Discriminator(
            _mode,
            custom_error_type="invalid_mode",
            custom_error_message="'mode' must be 'state_machine' (the default) or 'case_tracking'",
        ),
    ]
)

# Which model a key of the document leads to, and whether a name or index comes in between.
_CHILDREN: dict[tuple[type[BaseModel], str], tuple[type[BaseModel], bool]] = {
    (StateMachine, "states"): (State, True),
    (StateMachine, "instance_id"): (InstanceIdRule, False),
    (CaseTracking, "rules"): (SlaRule, True),
    (CaseTracking, "instance_id"): (InstanceIdRule, False),
    (State, "deadlines"): (Deadline, True),
    (State, "parallel"): (Branch, True),
    (State, "compensation"): (Compensation, False),
    (Branch, "compensation"): (Compensation, False),
}


class _DefinitionLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two YAML 1.1 traps closed.

    `on`, `off`, `yes`, `no` stay text (YAML 1.1 reads the key `on:` as `True`, which would drop
    every transition), and a key written twice in one mapping is an error instead of a silent
    overwrite (two `on:` blocks in one state would lose the first).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"the key {key!r} is written twice; merge the two into one",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_DefinitionLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_DefinitionLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class Catalog:
    """Every loaded definition, by workflow type and version."""

    definitions: dict[str, dict[int, Definition]] = field(default_factory=dict)
    files: dict[tuple[str, int], Path] = field(default_factory=dict)
    calendars: dict[str, Calendar] = field(default_factory=dict)

    def latest(self, workflow_type: str) -> Definition:
        """The version new instances start on."""
        versions = self.definitions[workflow_type]
        return versions[max(versions)]

    def get(self, workflow_type: str, version: int) -> Definition:
        """The version a running instance started on."""
        return self.definitions[workflow_type][version]

    def all(self) -> Iterable[Definition]:
        for versions in self.definitions.values():
            yield from versions.values()

    def decode_rules(self, registry: PayloadRegistry, max_bytes: int = 1_048_576,
                     max_future_skew_ms: int | None = 3_600_000,
                     accept_times: tuple[int, int] = (MIN_TIME_MS, MAX_TIME_MS)) -> DecodeRules:
        """Routes from event type to workflow, from the newest version of each workflow;
        `accept_times` is the run's range of event times, `[from, until)` in ms, which a
        definition's own `accept_times` replaces for its events."""
        routes: dict[str, Route] = {}
        catch_all: Route | None = None
        for workflow_type in sorted(self.definitions):
            definition = self.latest(workflow_type)
            route = Route(
                workflow_type=workflow_type,
                id_field=definition.instance_id.data_field,
                assume_zone=(ZoneInfo(definition.naive_time_zone)
                             if definition.naive_time_zone else None),
                accept_times=(definition.accept_times.bounds_ms(*accept_times)
                              if definition.accept_times else None),
            )
            for event_type in definition.event_types():
                routes[event_type] = route
            if isinstance(definition, CaseTracking) and definition.events == "any":
                catch_all = route
        return DecodeRules(routes=routes, registry=registry, catch_all=catch_all,
                           max_bytes=max_bytes, min_time_ms=accept_times[0],
                           max_time_ms=accept_times[1], max_future_skew_ms=max_future_skew_ms)


def calendar_folder(path: Path) -> Path:
    """Where the calendars of a definition file or folder are: `calendars/` beside them."""
    return (path if path.is_dir() else path.parent) / "calendars"


def load_catalog(path: Path, calendars: Path | None = None) -> Catalog:
    """Load a definition file or folder (and the calendars in `calendars`, by default those
    beside it); raises `DefinitionError` naming file, path and fix."""
    path = Path(path)
    if not path.exists():
        msg = (f"{path}: no such file or folder; pass --definitions with a YAML file or a "
               "folder of them")
        raise DefinitionError(msg)
    if calendars is not None and not calendars.is_dir():
        raise DefinitionError(f"{calendars}: no such folder of calendars")
    files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
    files = [f for f in files if f.name != FORMATS_FILE]  # the formats beside the definitions
    if not files:
        raise DefinitionError(f"{path}: the folder holds no *.yaml workflow definitions")
    catalog = Catalog(calendars=load_calendars(calendars or calendar_folder(path)))
    owner: dict[str, str] = {}
    catch_all: str | None = None
    for file in files:
        definition = load_definition(file, catalog.calendars)
        key = (definition.workflow, definition.version)
        if key in catalog.files:
            msg = (f"{file}: at version: {definition.workflow} version {definition.version} is "
                   f"also defined in {catalog.files[key]}; give one of them a new 'version'")
            raise DefinitionError(msg)
        catalog.definitions.setdefault(definition.workflow, {})[definition.version] = definition
        catalog.files[key] = file
        for event_type in sorted(definition.event_types()):
            if owner.setdefault(event_type, definition.workflow) != definition.workflow:
                msg = (f"{file}: at {_where_used(definition, event_type)}: event type "
                       f"{event_type!r} is also used by workflow {owner[event_type]!r}; an event "
                       "type must belong to one workflow (rename one of them)")
                raise DefinitionError(msg)
        if isinstance(definition, CaseTracking) and definition.events == "any":
            if catch_all not in (None, definition.workflow):
                msg = (f"{file}: at events: only one case-tracking definition may accept "
                       f"'events: any' ({catch_all!r} does already); list its event types instead")
                raise DefinitionError(msg)
            catch_all = definition.workflow
    return catalog


def load_definition(file: Path, calendars: dict[str, Calendar] | None = None) -> Definition:
    """Parse, validate and statically check one definition file (its business deadlines count
    in `calendars`)."""
    raw = read_bounded(file, MAX_FILE_BYTES, ", the limit for a definition; keep one workflow "
                       "per file and remove what it does not use")
    document = _parse_yaml(file, raw)
    if not isinstance(document, dict):
        got = "an empty file" if document is None else f"a {type(document).__name__}"
        msg = (f"{file}: at (top level): expected a mapping with 'workflow', 'version', 'start', "
               f"'initial', 'states'; got {got}")
        raise DefinitionError(msg)
    try:
        definition = _ADAPTER.validate_python(document)
    except ValidationError as e:
        raise DefinitionError(_explain(file, document, e)) from e
    problems = check_definition(definition, calendars or {})
    if problems:
        raise DefinitionError("\n".join(f"{file}: {problem}" for problem in problems))
    definition.bind_calendars(calendars or {})
    return definition


def _parse_yaml(file: Path, raw: bytes) -> Any:
    """Safe-load the document; errors name the line and column and, for tags, what to write."""
    try:
        return yaml.load(raw, Loader=_DefinitionLoader)  # a SafeLoader subclass: no object tags
    except yaml.constructor.ConstructorError as e:
        where = _mark(e.problem_mark)
        if e.problem and "could not determine a constructor" in e.problem:
            msg = (f"{file}: at {where}: {e.problem}; YAML tags that build objects are refused "
                   "(safe loader): write plain mappings, lists, text and numbers")
        else:
            msg = f"{file}: at {where}: {e.problem}"
        raise DefinitionError(msg) from e
    except yaml.MarkedYAMLError as e:
        msg = f"{file}: at {_mark(e.problem_mark)}: not valid YAML: {e.problem}"
        raise DefinitionError(msg) from e
    except yaml.YAMLError as e:
        raise DefinitionError(f"{file}: not valid YAML (write UTF-8 text): {e}") from e


def _mark(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown line)"


def _explain(file: Path, document: dict[str, Any], error: ValidationError) -> str:
    """One line per problem: file, path in the document, what is wrong, what to write."""
    root = CaseTracking if _mode(document) == "case_tracking" else StateMachine
    lines = []
    for problem in error.errors():
        loc = [str(p) for p in problem["loc"]]
        if loc and loc[0] in _MODES:
            loc = loc[1:]
        where = ".".join(loc) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}; {_allowed_keys_hint(root, loc[:-1], loc[-1])}"
        elif problem["type"] == "missing":
            message = f"required key {loc[-1]!r} is missing; add it"
        elif problem["type"] == "invalid_mode":
            where = "mode"
        elif problem["type"] == "value_error":
            message = str(problem.get("ctx", {}).get("error", message))
        lines.append(f"{file}: at {where}: {message}")
    return "\n".join(dict.fromkeys(lines))


def _allowed_keys_hint(root: type[BaseModel], parent: list[str], key: str) -> str:
    """The keys the model at `parent` accepts, best guess first (walks names and indexes, so a
    state may be called `compensation` without confusing the hint)."""
    model, i = root, 0
    while i < len(parent):
        child = _CHILDREN.get((model, parent[i]))
        if child is None:
            break
        model, named = child
        i += 2 if named else 1
    names = sorted(f.alias or n for n, f in model.model_fields.items())
    guess = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    return f"{hint}allowed keys here: {', '.join(names)}"


def _where_used(definition: Definition, event_type: str) -> str:
    """The first place in a definition that names an event type (for error messages)."""
    if isinstance(definition, CaseTracking):
        return "events"
    if event_type in definition.start:
        return "start"
    for name, state in definition.states.items():
        if event_type in state.on:
            return f"states.{name}.on.{event_type}"
        for branch_name, branch in (state.parallel or {}).items():
            if event_type in (branch.done, branch.failed):
                return f"states.{name}.parallel.{branch_name}"
            if branch.compensation and branch.compensation.ack == event_type:
                return f"states.{name}.parallel.{branch_name}.compensation.ack"
        if state.compensation and state.compensation.ack == event_type:
            return f"states.{name}.compensation.ack"
    return "ignore"


def check_definition(definition: Definition,
                     calendars: dict[str, Calendar] | None = None) -> list[str]:
    """Static checks beyond the schema: the problems that would make instances misbehave."""
    if isinstance(definition, CaseTracking):
        problems = _check_zone(definition.naive_time_zone) if definition.naive_time_zone else []
        return problems + _check_rule_calendars(definition, calendars or {})
    problems = _check_zone(definition.naive_time_zone) if definition.naive_time_zone else []
    states = definition.states
    defined = ", ".join(sorted(states))
    if definition.initial not in states:
        problems.append(f"at initial: state {definition.initial!r} is not defined under 'states'; "
                        f"name one of: {defined}")
    for name, state in states.items():
        for where, target in _target_paths(state):
            if target not in states:
                problems.append(f"at states.{name}.{where}: target {target!r} is not a defined "
                                f"state; add it under 'states' or name one of: {defined}")
        if not state.is_terminal and not state.targets():
            # A deadline with only a `command` reminds but never leaves: still a hang.
            problems.append(f"at states.{name}: not terminal and no way out (no 'on' transition, "
                            "no deadline with 'goto'): an instance here would hang forever; "
                            "add 'on', a deadline with 'goto', or an 'outcome'")
        for i, deadline in enumerate(state.deadlines):
            if deadline.from_event and deadline.from_event not in definition.event_types():
                problems.append(f"at states.{name}.deadlines.{i}.from: {deadline.from_event!r} is "
                                "no event of this workflow; name a type from 'start', 'ignore' "
                                "or an 'on' of this file")
    problems += _check_calendars(definition, calendars or {})
    if problems:
        return problems
    reachable = _reachable(definition)
    for name in states:
        if name not in reachable:
            problems.append(f"at states.{name}: unreachable from initial state "
                            f"{definition.initial!r}; remove it or add a transition to it")
    problems += _livelocks(definition)
    if not problems:
        problems += _dead_ends(definition)
    return problems


def _check_calendars(definition: StateMachine, calendars: dict[str, Calendar]) -> list[str]:
    """Every calendar named exists; every business-time deadline has one."""
    known = ", ".join(sorted(calendars)) or "none: add calendars/<name>.yaml beside the definitions"
    problems = []
    if definition.calendar is not None and definition.calendar not in calendars:
        problems.append(f"at calendar: no calendar {definition.calendar!r} (calendars: {known})")
    for name, state in definition.states.items():
        if state.calendar is not None and state.calendar not in calendars:
            problems.append(f"at states.{name}.calendar: no calendar {state.calendar!r} "
                            f"(calendars: {known})")
        for i, deadline in enumerate(state.deadlines):
            where = f"states.{name}.deadlines.{i}"
            if deadline.calendar is not None and deadline.calendar not in calendars:
                problems.append(f"at {where}.calendar: no calendar {deadline.calendar!r} "
                                f"(calendars: {known})")
            elif deadline.business is not None and definition.calendar_of(name, deadline) is None:
                problems.append(f"at {where}.after: {deadline.after!r} is business time but no "
                                "calendar applies; add 'calendar: <name>' to the deadline, its "
                                "state or the definition")
    return problems


def _check_rule_calendars(definition: CaseTracking, calendars: dict[str, Calendar]) -> list[str]:
    """Every calendar named exists; every rule in business time has one."""
    known = ", ".join(sorted(calendars)) or "none: add calendars/<name>.yaml beside the definitions"
    problems = [f"at calendar: no calendar {definition.calendar!r} (calendars: {known})"
                for _ in [0] if definition.calendar and definition.calendar not in calendars]
    for i, rule in enumerate(definition.rules):
        if rule.calendar is not None and rule.calendar not in calendars:
            problems.append(f"at rules.{i}.calendar: no calendar {rule.calendar!r} "
                            f"(calendars: {known})")
        elif rule.business and definition.rule_calendar(i) is None:
            problems.append(f"at rules.{i}: {rule.limit!r} is business time but no calendar "
                            "applies; add 'calendar: <name>' to the rule or the definition")
    return problems


def _target_paths(state: State) -> list[tuple[str, str]]:
    """Each target of a state with the key that names it, so errors point at the right line."""
    found = [(f"on.{event_type}", target) for event_type, target in state.on.items()]
    found += [(f"deadlines.{i}.goto", d.goto) for i, d in enumerate(state.deadlines) if d.goto]
    joins = (("then", state.then), ("on_failure", state.on_failure))
    return found + [(key, target) for key, target in joins if target]


def _check_zone(zone: str) -> list[str]:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return [f"at naive_time_zone: {zone!r} is not an IANA time zone; "
                "write e.g. 'UTC' or 'Europe/Amsterdam'"]
    return []


def _reachable(definition: StateMachine) -> set[str]:
    seen, todo = set(), [definition.initial]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += definition.states[name].targets()
    return seen


def _dead_ends(definition: StateMachine) -> list[str]:
    """Non-terminal states from which no terminal state can be reached: instances never end."""
    ending = {n for n, s in definition.states.items() if s.is_terminal}
    grew = True
    while grew:
        before = len(ending)
        ending |= {n for n, s in definition.states.items() if ending.intersection(s.targets())}
        grew = len(ending) > before
    return [f"at states.{name}: no terminal state can be reached from here, so instances never "
            "end; add a transition or a deadline 'goto' towards a state with an 'outcome'"
            for name in definition.states if name not in ending]


def _livelocks(definition: StateMachine) -> list[str]:
    """Cycles among states none of which has a deadline with `goto`: services could loop forever.

    A deadline that only sends a `command` does not leave the loop, so it does not count.
    """
    graph = {n: [t for t in s.targets() if not definition.states[t].is_terminal]
             for n, s in definition.states.items()
             if not s.is_terminal and not any(d.goto for d in s.deadlines)}
    problems = []
    for component in _strongly_connected(graph):
        cyclic = len(component) > 1 or component[0] in graph.get(component[0], [])
        if cyclic:
            loop = ", ".join(sorted(component))
            problems.append(f"at states: the cycle through {loop} has no deadline with 'goto': "
                            "an event loop between services could run forever; give one of "
                            "these states a deadline with 'goto'")
    return problems


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm over the states that no `goto` deadline can leave."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, []):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            components.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return components
