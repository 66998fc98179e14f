"""Manual review on a cluster: the Label Studio contract and the review-apply pod's run config.

Both sides of the Label Studio exchange read this module: the review-apply
pod imports the held records as tasks with `LABEL_CONFIG`, and the operator
turns the finished annotations back into decisions using the same control
names and choice values. Pure pydantic, no heavy imports (the operator may
import `sft_trainer.config` and nothing else of the trainer).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import WireModel

TOKEN_ENV = "LABEL_STUDIO_TOKEN"
"""The pod reads the Label Studio token from this variable (set from the referenced Secret, by reference)."""

# Control names of LABEL_CONFIG and the choice values they offer.
DECISION_CONTROL, EDIT_CONTROL, NOTE_CONTROL = "decision", "edited_response", "note"
CHOICES = {"Keep": "keep", "Drop": "drop", "Keep edited response": "edit"}
"""Label Studio choice value -> review decision."""

LABEL_CONFIG = f"""<View>
  <Header value="Prompt"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Response"/>
  <Text name="response" value="$response"/>
  <Header value="Why it is held"/>
  <Text name="flags" value="$flags"/>
  <Choices name="{DECISION_CONTROL}" toName="response" choice="single" required="true" showInline="true">
    <Choice value="Keep"/>
    <Choice value="Drop"/>
    <Choice value="Keep edited response"/>
  </Choices>
  <Header value="Edited response (for Keep edited response)"/>
  <TextArea name="{EDIT_CONTROL}" toName="response" editable="true" maxSubmissions="1" rows="6"/>
  <Header value="Note (why it is dropped)"/>
  <TextArea name="{NOTE_CONTROL}" toName="response" maxSubmissions="1" rows="2"/>
</View>"""
"""The labeling interface: prompt, response and the reasons in words; keep / drop / keep an edited response."""


class LabelStudioTarget(WireModel):
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    """Base URL of the Label Studio server, e.g. `http://label-studio.review:8080`."""
    project: str = Field(min_length=1, max_length=50)
    """Title of the Label Studio project: created when missing, reused (found by title) otherwise."""


class ReviewApplyRunConfig(WireModel):
    """The file the review-apply pod reads: which folder, which decisions, and where the tasks go."""

    output_dir: str
    """The curation's output folder (curated.jsonl, rejected.jsonl, review.jsonl, review_decisions.jsonl)."""
    decisions: list[dict[str, Any]] = Field(default_factory=list)
    """Decisions to append to review_decisions.jsonl before applying (lines already there are not appended again)."""
    label_studio: LabelStudioTarget | None = None
    """Where the records still pending go as tasks (the token comes from the LABEL_STUDIO_TOKEN variable)."""


# --------------------------------------------------------------------------
# The HTTP client (standard library only: both the pod and the operator use it)
# --------------------------------------------------------------------------


class LabelStudioError(RuntimeError):
    """Label Studio could not be used; `reason` is a CamelCase condition reason, the message never holds the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


UNREACHABLE, UNAUTHORIZED, API_ERROR = "LabelStudioUnreachable", "LabelStudioUnauthorized", "LabelStudioError"


class LabelStudioClient:
    """The few calls review needs: find or create the project, import tasks, export tasks with annotations.

    The token is a legacy API token (`Authorization: Token ...`) or a personal
    access token (a JWT refresh token, exchanged for an access token first).
    """

    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._authorization: str | None = None

    def _auth_header(self) -> str:
        if self._authorization is None:
            if self._token.count(".") == 2:  # a JWT: a personal access token
                access = self._call("POST", "/api/token/refresh", {"refresh": self._token}, authorize=False)
                self._authorization = f"Bearer {access['access']}"
            else:
                self._authorization = f"Token {self._token}"
        return self._authorization

    def _call(self, method: str, path: str, body: Any = None, authorize: bool = True) -> Any:
        import json
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if authorize:
            headers["Authorization"] = self._auth_header()
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        where = f"{method} {self.url}{path.split('?')[0]}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise LabelStudioError(UNAUTHORIZED, f"{where}: HTTP {err.code}, the token was refused") from None
            detail = err.read()[:200].decode("utf-8", "replace")
            raise LabelStudioError(API_ERROR, f"{where}: HTTP {err.code} {detail}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise LabelStudioError(UNREACHABLE, f"{where}: {reason}") from None
        return json.loads(payload) if payload else None

    def find_project(self, title: str) -> int | None:
        page = self._call("GET", f"/api/projects?title={_quote(title)}&page_size=100")
        projects = page["results"] if isinstance(page, dict) else page
        ids = [p["id"] for p in projects if p.get("title") == title]
        return min(ids) if ids else None

    def ensure_project(self, title: str) -> int:
        """The project titled `title` (the oldest one, if a person made a second), created when missing."""
        found = self.find_project(title)
        if found is not None:
            return found
        created = self._call("POST", "/api/projects", {"title": title, "label_config": LABEL_CONFIG})
        return int(created["id"])

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> None:
        if tasks:
            self._call("POST", f"/api/projects/{project}/import?commit_to_project=true", tasks)

    def export_tasks(self, project: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations (the export API, which includes unannotated tasks)."""
        tasks = self._call("GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true")
        return list(tasks or [])


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
