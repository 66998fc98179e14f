"""`sftctl review DIR [--reviewer NAME] [--apply]`: work through a curation's review queue in the terminal.

One held record at a time, its flagged spans highlighted and its reasons said
in words. Keys: k keep, d drop (asks for an optional note), e edit the
response then keep, s skip, u undo this session's last decision, / filter by
reason, q save and quit. Every decision is appended to
DIR/review_decisions.jsonl the moment it is made (so a killed session loses
nothing, and a second run starts at the first undecided record); `q` applies
the log to curated.jsonl / rejected.jsonl / review.jsonl / report.json
(`sft_trainer.curation.review.apply_decisions`). `--apply` applies without
opening the UI.
"""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sft_trainer.curation.review import ApplyResult


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("review", help="review the records a curation held, in the terminal")
    parser.add_argument("dir", type=Path, help="the curation's output folder (review.jsonl, report.json, ...)")
    parser.add_argument("--reviewer", default=None, help="name recorded with each decision (default: your login)")
    parser.add_argument(
        "--apply", action="store_true", help="apply review_decisions.jsonl to the outputs without opening the UI"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sft_trainer.curation.review import ReviewError, ReviewSession, apply_decisions

    console = Console(stderr=True)
    try:
        if args.apply:
            result = apply_decisions(args.dir)
        else:
            session = ReviewSession(args.dir, args.reviewer or getpass.getuser())
            result = _review_app(session).run()
    except ReviewError as err:
        console.print(f"[red]Cannot review {args.dir}:[/] {err}")
        return 2
    if result is not None:
        _print_result(console, args.dir, result)
    return 0


def _print_result(console: Any, folder: Path, result: ApplyResult) -> None:
    figures = result.figures
    if result.recovered:
        console.print(f"Note: {result.recovered}")
    console.print(
        f"{'Applied' if result.changed else 'Already applied'}: {figures['kept']} kept, "
        f"{figures['dropped']} dropped, {figures['pending']} pending, in {folder}"
    )
    for line in result.problems:
        console.print(f"[yellow]Not applied:[/] {line}")


def _review_app(session: Any) -> Any:
    """The Textual app, built here so that `sftctl --help` does not import Textual."""
    from rich.text import Text
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import Vertical, VerticalScroll
    from textual.screen import ModalScreen
    from textual.widgets import Footer, Input, Label, Static, TextArea

    from sft_trainer.curation.review import explain, flagged_spans

    flag_style = {
        "invisible": "bold white on red",
        "mixed_script": "bold black on yellow",
        "unusual": "bold white on magenta",
        "script": "underline cyan",
    }
    flag_words = {
        "invisible": "invisible character",
        "mixed_script": "mixed-script word",
        "unusual": "unusual character",
        "script": "non-Latin letters",
    }

    def highlighted(content: str) -> Text:
        """The turn's text with its flags styled; invisible characters shown by their code point."""
        text, last = Text(), 0
        for flag in flagged_spans(content):
            text.append(content[last : flag.start])
            shown = "".join(f"⟦U+{ord(ch):04X}⟧" for ch in content[flag.start : flag.end])
            text.append(shown if flag.kind == "invisible" else content[flag.start : flag.end], flag_style[flag.kind])
            last = flag.end
        text.append(content[last:])
        return text

    class Prompt(ModalScreen[str | None]):
        """One line of input (drop note, reason filter); Enter answers, Escape cancels."""

        BINDINGS = [Binding("escape", "cancel", "Cancel")]
        DEFAULT_CSS = "Prompt { align: center middle; } #dialog { width: 80; height: auto; border: thick $accent; padding: 1 2; background: $surface; }"

        def __init__(self, question: str, value: str = "") -> None:
            super().__init__()
            self.question, self.value = question, value

        def compose(self) -> ComposeResult:
            with Vertical(id="dialog"):
                yield Static(self.question)
                yield Input(value=self.value)

        def on_input_submitted(self, event: Input.Submitted) -> None:
            self.dismiss(event.value)

        def action_cancel(self) -> None:
            self.dismiss(None)

    class Edit(ModalScreen[str | None]):
        """The response in an editor; ctrl+s keeps the edited version, Escape cancels."""

        BINDINGS = [Binding("ctrl+s", "save", "Keep edited"), Binding("escape", "cancel", "Cancel")]
        DEFAULT_CSS = "Edit { align: center middle; } #dialog { width: 90%; height: 80%; border: thick $accent; background: $surface; }"

        def __init__(self, response: str) -> None:
            super().__init__()
            self.response = response

        def compose(self) -> ComposeResult:
            with Vertical(id="dialog"):
                yield Label("Edit the response. ctrl+s: keep the edited version; Escape: cancel")
                yield TextArea(self.response, soft_wrap=True)
            yield Footer()

        def action_save(self) -> None:
            self.dismiss(self.query_one(TextArea).text)

        def action_cancel(self) -> None:
            self.dismiss(None)

    class ReviewApp(App["ApplyResult | None"]):
        TITLE = "sftctl review"
        BINDINGS = [
            Binding("k", "keep", "Keep"),
            Binding("d", "drop", "Drop"),
            Binding("e", "edit", "Edit+keep"),
            Binding("s", "skip", "Skip"),
            Binding("u", "undo", "Undo"),
            Binding("slash", "filter", "Filter"),
            Binding("q", "save_quit", "Save & quit"),
        ]
        DEFAULT_CSS = "#progress { background: $accent; color: $text; padding: 0 1; } #record { padding: 0 1; }"

        def __init__(self) -> None:
            super().__init__()
            self.current: int | None = session.next_pending()
            self.reason: str = ""

        def compose(self) -> ComposeResult:
            yield Static(id="progress")
            with VerticalScroll():
                yield Static(id="record")
            yield Footer()

        def on_mount(self) -> None:
            self.show()

        def show(self) -> None:
            decided, total = session.progress()
            where = f" · filter: {self.reason}" if self.reason else ""
            self.query_one("#progress", Static).update(
                f"{decided}/{total} decided · reviewer {session.reviewer}{where} · {session.out}"
            )
            self.query_one("#record", Static).update(self.render_record())

        def render_record(self) -> Text:
            if self.current is None:
                left = "matches the filter" if self.reason else "is left"
                return Text(f"No undecided record {left}. q: save and quit; /: change the filter.", "bold")
            record = session.held[self.current]
            out = Text()
            out.append(f"Record #{self.current}", "bold")
            out.append(f"  task: {record.get('task', 'unlabelled')}\n")
            for reason in record["reasons"]:
                out.append(f"Held for {reason}: ", "bold red")
                out.append(explain(reason) + "\n")
            scores = record.get("scores") or {}
            if scores:
                out.append("Scores: " + " · ".join(f"{k} {v}" for k, v in scores.items()) + "\n", "dim")
            for i, message in enumerate(record["messages"]):
                flags = flagged_spans(message["content"])
                for flag in flags:
                    word = message["content"][flag.start : flag.end]
                    shown = "" if flag.kind == "invisible" else f" {word!r}"
                    out.append(f"  ⚑ turn {i + 1} ({message['role']}): {flag_words[flag.kind]}{shown}: ")
                    out.append(flag.detail + "\n", flag_style[flag.kind])
            for message in record["messages"]:
                out.append(f"\n── {message['role']} ──\n", "bold blue")
                out.append_text(highlighted(message["content"]))
                out.append("\n")
            return out

        def advance(self) -> None:
            self.current = session.next_pending(after=self.current, reason=self.reason)
            self.show()

        def action_keep(self) -> None:
            if self.current is not None:
                session.decide(self.current, "keep")
                self.advance()

        def action_drop(self) -> None:
            if self.current is None:
                return
            index = self.current

            def done(note: str | None) -> None:
                if note is not None:
                    session.decide(index, "drop", note=note.strip())
                    self.advance()

            self.push_screen(Prompt(f"Drop record #{index}. Note (optional), Enter to drop, Escape to cancel:"), done)

        def action_edit(self) -> None:
            if self.current is None:
                return
            index = self.current
            original = [m for m in session.held[index]["messages"] if m["role"] == "assistant"][-1]["content"]

            def done(text: str | None) -> None:
                if text is None:
                    return
                if text == original:
                    session.decide(index, "keep")
                elif text.strip():
                    session.decide(index, "edit", edited_response=text)
                else:
                    self.notify("An empty response cannot be kept; drop the record instead.", severity="error")
                    return
                self.advance()

            self.push_screen(Edit(original), done)

        def action_skip(self) -> None:
            session.refresh()  # another reviewer may have decided records meanwhile
            self.advance()

        def action_undo(self) -> None:
            index = session.undo()
            if index is None:
                self.notify("Nothing of this session to undo.")
                return
            self.current = index
            self.show()

        def action_filter(self) -> None:
            reasons = ", ".join(f"{r} ({n})" for r, n in sorted(session.reasons().items()))

            def done(value: str | None) -> None:
                if value is not None:
                    self.reason = value.strip()
                    self.current = session.next_pending(reason=self.reason)
                    self.show()

            self.push_screen(Prompt(f"Show records whose reason contains (empty: all). {reasons}", self.reason), done)

        def action_save_quit(self) -> None:
            self.exit(session.apply())

    return ReviewApp()
