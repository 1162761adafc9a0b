"""A convoy from a Markdown plan: `plan_parse(text)` reads the text (a pure function: no
database) into what `convoy_create` takes plus the beads, and lists every syntax error with its
line number. `convoys.services.plans.convoy_import` checks the rest with the API's own rules
(`legs_input.legs_validate`: keys, titles, rigs, agents, dependencies, cycles, globs,
acceptance), maps each of its errors back to the line it is about, and writes it all in one
transaction. The format (docs/convoys.md, "Plan format"):

    # Build the authentication system            <- the convoy's title (one `#` line, first)
    Free text up to the first `##`: the convoy's description.

    ## db — Database schema                       <- a leg: key, then `—`, ` - ` or `:`, title
    Rig: db-rig                                   <- an existing rig of the repository (slug)
    Agent: claude-1                               <- or: an agent to provision a rig for
    Depends on: api, frontend                     <- leg keys, comma-separated (`none`: none)
    Scope: src/db/**, migrations/**               <- path globs, comma-separated
    Watch: src/shared/**
    Acceptance:                                   <- a checklist: the `- ` items below it,
    - the users table has a unique email            or `Acceptance: a; b` on one line
    Any other text: the leg's description.
    - [ ] Write the migration                     <- an open bead in the leg's rig
      indented lines under a task: its description
    - [x] Sketch the schema                       <- a bead created closed (done already)

Labels are case-insensitive and may be bold (`**Rig:**`). Text inside ``` fences is plain text.
"""

import re
from dataclasses import dataclass, field

PLAN_MAX_LEGS = 200
PLAN_MAX_BEADS = 500
TITLE_MAX = 200  # a convoy's and a leg's title (their columns)
BEAD_TITLE_MAX = 300
TEXT_MAX = 20_000  # a description (the API's limit for long texts)

_HEADING = re.compile(r"^(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
# key, then an em dash (or an en dash, U+2013), ` - ` or `:`, then the title
_LEG_HEADING = re.compile(r"^(?P<key>\S+?)\s*(?:\u2014|\u2013|:|\s-\s)\s*(?P<title>.*)$")
_TASK = re.compile(r"^\s*[-*+][ \t]+\[(?P<mark>[ xX])\](?:[ \t]+(?P<title>.*))?$")
_BULLET = re.compile(r"^\s*[-*+][ \t]+(?P<text>.*)$")
_LABELS = {
    "depends on": "depends_on",
    "rig": "rig",
    "agent": "agent",
    "scope": "scope",
    "watch": "watch",
    "acceptance": "acceptance",
}
_FIELD = re.compile(
    r"^(?:\*\*|__)?(?P<label>depends[ _-]on|rig|agent|scope|watch|acceptance)(?:\*\*|__)?[ \t]*:"
    r"(?:\*\*|__)?[ \t]*(?P<value>.*)$",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^\s*(```|~~~)")
FORMAT_HINT = "`## key — title` (the key, then an em dash, ` - ` or `:`, then the title)"


@dataclass(frozen=True)
class PlanError:
    """One problem of a plan: its line (1-based), what is wrong, and the convoy input it is
    about (`title`, `legs[1].depends_on`, `beads[3]`; '' for the plan as a whole)."""

    line: int
    message: str
    field: str = ""

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"

    def as_dict(self) -> dict:
        # (the API's error item, `{field, code, message}`, with the line)
        return {"line": self.line, "field": self.field, "code": "invalid", "message": self.message}


@dataclass
class PlanLeg:
    line: int  # its `##` heading
    key: str = ""
    title: str = ""
    rig: str = ""  # an existing rig's slug, resolved in the repository by the import
    agent: str = ""
    depends_on: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)
    watch: list[str] = field(default_factory=list)
    acceptance: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # input field -> the line giving it

    @property
    def description(self) -> str:
        return _text(self.text)

    def as_input(self) -> dict:
        """The leg as `convoy_create` takes it, `rig` still a slug (the import resolves it)."""
        leg = {
            "key": self.key,
            "title": self.title,
            "description": self.description,
            "acceptance": list(self.acceptance),
            "depends_on": list(dict.fromkeys(self.depends_on)),
            "scope": list(self.scope),
            "watch": list(self.watch),
        }
        if self.rig:
            leg["rig"] = self.rig
        if self.agent:
            leg["agent"] = self.agent
        return leg


@dataclass
class PlanBead:
    leg: int  # the index of its leg in `Plan.legs`
    line: int
    title: str
    closed: bool = False
    text: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        return _text(self.text)


@dataclass
class Plan:
    title: str = ""
    title_line: int = 0
    text: list[str] = field(default_factory=list)
    text_line: int = 0
    legs: list[PlanLeg] = field(default_factory=list)
    beads: list[PlanBead] = field(default_factory=list)

    @property
    def description(self) -> str:
        return _text(self.text)

    def convoy_input(self) -> dict:
        """`convoy_create`'s title, description and legs (each leg's `rig` a slug)."""
        return {
            "title": self.title,
            "description": self.description,
            "legs": [leg.as_input() for leg in self.legs],
        }

    def line_of(self, name: str) -> int:
        """The line an input field (`legs[2].depends_on`, `title`) was given on."""
        match = re.fullmatch(r"legs\[(\d+)\](?:\.(\w+))?", name)
        if match and int(match[1]) < len(self.legs):
            leg = self.legs[int(match[1])]
            wanted = match[2] or ""
            if wanted in ("rig", "agent"):  # with both given, the second is the one too many
                given = [leg.lines[k] for k in ("rig", "agent") if k in leg.lines]
                return max(given, default=leg.line)
            return leg.lines.get(wanted, leg.line)
        if name == "description" and self.text_line:
            return self.text_line
        return self.title_line or 1


def _text(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n").rstrip()


def _values(value: str) -> list[str]:
    """A comma-separated list; `none` (or `-`) alone is the empty list; backticks dropped."""
    items = [item.strip().strip("`").strip() for item in value.split(",")]
    items = [item for item in items if item]
    if len(items) == 1 and items[0].lower() in ("none", "-", "—"):
        return []
    return items


def plan_parse(text: str) -> tuple[Plan, list[PlanError]]:
    """Read a Markdown plan: the convoy's input and every syntax error with its line.

    Checks here: the `#` title (first, once, not empty, at most 200 characters), leg headings,
    the number of legs and beads, tasks outside a leg, `Rig:`/`Agent:` given twice, an empty
    `Acceptance:`, description and bead title lengths. What the API checks for any convoy
    (keys, titles, rigs, dependencies, cycles, globs, acceptance items) is left to
    `legs_validate`, whose errors the import maps back to lines with `Plan.line_of`.
    """
    plan = Plan()
    errors: list[PlanError] = []

    def error(line: int, message: str, name: str = "") -> None:
        errors.append(PlanError(line, message, name))

    text = (text or "").lstrip("\ufeff")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    leg: PlanLeg | None = None
    bead: PlanBead | None = None  # the last task: indented lines below it are its description
    fence = ""
    acceptance_at = 0  # the line of an open `Acceptance:` list
    acceptance_items = 0
    stray_line = 0  # the first line of text before the `#` title
    too_many_legs = too_many_beads = False

    def close_acceptance() -> None:
        nonlocal acceptance_at
        if acceptance_at and not acceptance_items and leg is not None:
            error(
                acceptance_at,
                "`Acceptance:` needs `- ` items on the lines below it, or its items on the same "
                "line separated by `;`.",
                f"legs[{len(plan.legs) - 1}].acceptance",
            )
        acceptance_at = 0

    def add_text(n: int, line: str) -> None:
        if leg is not None:
            if not any(x.strip() for x in leg.text) and line.strip():
                leg.lines.setdefault("description", n)
            leg.text.append(line.rstrip())
        elif plan.title_line:
            if not plan.text_line and line.strip():
                plan.text_line = n
            plan.text.append(line.rstrip())

    for n, line in enumerate(lines, start=1):
        if "\x00" in line:
            error(n, "this line contains a NUL character (a binary file?): remove it.")
            line = line.replace("\x00", "")
        stripped = line.strip()
        if fence:  # inside a code block: text, whatever it looks like
            add_text(n, line)
            if stripped.startswith(fence):
                fence = ""
            continue
        if not plan.title_line and not stripped:
            continue
        heading = _HEADING.match(stripped) if not line[:1].isspace() else None
        if heading and len(heading[1]) <= 2:
            bead = None
            close_acceptance()
            content = (heading[2] or "").strip()
            if len(heading[1]) == 1:
                if plan.title_line:
                    error(
                        n,
                        f"a plan has one `#` title (line {plan.title_line}); a leg is a `##` "
                        "section.",
                        "title",
                    )
                    continue
                plan.title_line = n
                plan.title = content
                if not content:
                    error(n, "the `#` title line needs the convoy's title.", "title")
                elif len(content) > TITLE_MAX:
                    error(
                        n, f"the title is {len(content)} characters; at most {TITLE_MAX}.", "title"
                    )
                continue
            # a leg
            if not plan.title_line:
                stray_line = stray_line or n
            index = len(plan.legs)
            if index >= PLAN_MAX_LEGS:
                if not too_many_legs:
                    error(n, f"a plan has at most {PLAN_MAX_LEGS} legs.", "legs")
                too_many_legs = True
                leg = None
                continue
            leg = PlanLeg(line=n)
            match = _LEG_HEADING.match(content)
            if match:
                leg.key, leg.title = match["key"].strip("`"), match["title"].strip()
            elif content and len(content.split()) == 1:
                leg.key = content.strip("`")
                error(n, f"leg `{leg.key}` has no title: {FORMAT_HINT}.", f"legs[{index}].title")
            else:
                leg.title = content
                error(n, f"a leg heading is {FORMAT_HINT}.", f"legs[{index}].key")
            leg.lines.update(key=n, title=n)
            plan.legs.append(leg)
            continue
        if not plan.title_line:
            stray_line = stray_line or n
            continue
        if _FENCE.match(line):
            bead = None
            close_acceptance()
            fence = _FENCE.match(line)[1]
            add_text(n, line)
            continue
        task = _TASK.match(line)
        if task:
            close_acceptance()
            title = (task["title"] or "").strip()
            if leg is None:
                bead = None
                if not too_many_legs:
                    error(n, "a task (`- [ ]`) belongs in a leg's `##` section.", "beads")
                continue
            where = f"beads[{len(plan.beads)}]"
            if len(plan.beads) >= PLAN_MAX_BEADS:
                if not too_many_beads:
                    error(n, f"a plan has at most {PLAN_MAX_BEADS} tasks.", "beads")
                too_many_beads = True
                bead = None
                continue
            if not title:
                error(n, "a task needs a title: `- [ ] what to do`.", where)
            elif len(title) > BEAD_TITLE_MAX:
                error(n, f"a task's title is at most {BEAD_TITLE_MAX} characters.", where)
            bead = PlanBead(
                leg=len(plan.legs) - 1, line=n, title=title, closed=task["mark"] in "xX"
            )
            plan.beads.append(bead)
            continue
        if bead is not None and stripped and line[:1].isspace():
            bead.text.append(stripped)  # indented under a task: the task's description
            continue
        bead = None
        if not stripped:
            if acceptance_items:
                close_acceptance()
            add_text(n, line)
            continue
        if leg is None:  # the convoy's description (or text after too many legs)
            if not too_many_legs:
                add_text(n, line)
            continue
        index = len(plan.legs) - 1
        if acceptance_at:
            item = _BULLET.match(line)
            if item:
                leg.acceptance.append(item["text"].strip())
                acceptance_items += 1
                continue
            close_acceptance()
        found = _FIELD.match(stripped)
        if not found:
            add_text(n, line)
            continue
        name = _LABELS[re.sub(r"[ _-]", " ", found["label"].lower())]
        value = found["value"].strip()
        leg.lines.setdefault(name, n)
        if name in ("rig", "agent"):
            value = value.strip("`").strip()
            label = found["label"].capitalize()
            if getattr(leg, name):
                error(
                    n,
                    f"`{label}:` given twice (line {leg.lines[name]}).",
                    f"legs[{index}].{name}",
                )
            elif not value:
                what = "an existing rig's slug" if name == "rig" else "an agent's name"
                error(n, f"`{label}:` needs {what}.", f"legs[{index}].{name}")
            else:
                setattr(leg, name, value)
        elif name == "acceptance":
            if value:
                leg.acceptance += [item.strip() for item in value.split(";") if item.strip()]
            else:
                acceptance_at, acceptance_items = n, 0
        else:
            getattr(leg, name).extend(_values(value))
    close_acceptance()

    if not plan.title_line:
        if stray_line or any(line.strip() for line in lines):
            error(
                stray_line or 1,
                "the plan starts with its `# title` line (the convoy's title).",
                "title",
            )
        else:
            error(1, "the plan is empty: write a `# title` line, then a `##` section per leg.")
    elif stray_line:
        error(stray_line, "the plan starts with its `# title` line; move this below it.", "title")
    if plan.title_line and not plan.legs and not too_many_legs:
        error(
            plan.title_line, f"the plan has no legs: add a section {FORMAT_HINT} per leg.", "legs"
        )
    if len(plan.description) > TEXT_MAX:
        error(
            plan.text_line,
            f"the convoy's description is at most {TEXT_MAX} characters.",
            "description",
        )
    for index, item in enumerate(plan.legs):
        if len(item.description) > TEXT_MAX:
            error(
                item.lines.get("description", item.line),
                f"leg `{item.key}`'s description is at most {TEXT_MAX} characters.",
                f"legs[{index}].description",
            )
    for index, item in enumerate(plan.beads):
        if len(item.description) > TEXT_MAX:
            error(
                item.line,
                f"a task's description is at most {TEXT_MAX} characters.",
                f"beads[{index}]",
            )
    errors.sort(key=lambda e: e.line)
    return plan, errors
