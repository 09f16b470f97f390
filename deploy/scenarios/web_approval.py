"""Approving through the approvals page, as a person would with a browser: sign in with a token, find the pending
action's approve form on the page (with its CSRF token), submit it, and read the page's answer."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import httpx

_FORM = re.compile(r'<form method="post" action="(?P<action>[^"]+/decide)" class="decide decide-approve">(?P<body>.*?)'
                   r"</form>", re.DOTALL)  # fmt: skip
_HIDDEN = re.compile(r'<input type="hidden" name="(?P<name>[^"]+)" value="(?P<value>[^"]*)">')


class WebApprovalError(RuntimeError):
    """The page refused, or did not offer, the approval; the message says what the page said."""


async def approve_on_page(base_url: str, token: str, incident_id: str, comment: str, *, timeout_s: float) -> str:
    """Approve `incident_id`'s pending action on the page at `base_url`; the page's confirmation, in words."""
    origin = f"{urlsplit(base_url).scheme}://{urlsplit(base_url).netloc}"
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers={"Origin": origin}) as client:
        signed_in = await client.post("/approvals/login", data={"token": token})
        if signed_in.status_code != 303:
            raise WebApprovalError(f"sign-in refused (HTTP {signed_in.status_code})")
        page = await client.get("/approvals")
        page.raise_for_status()
        form = next((m for m in _FORM.finditer(page.text) if f"/{incident_id}/decide" in m.group("action")), None)
        if form is None:
            raise WebApprovalError(f"the approvals page offers no approve form for {incident_id}")
        fields = {m.group("name"): html.unescape(m.group("value")) for m in _HIDDEN.finditer(form.group("body"))}
        answer = await client.post(html.unescape(form.group("action")), data={**fields, "comment": comment})
        if answer.status_code != 303:
            raise WebApprovalError(f"the page refused the approval (HTTP {answer.status_code})")
        # The page redirects to itself with its (signed) message: what was sent, or why not.
        told = parse_qs(urlsplit(answer.headers.get("location", "")).query)
        text = (told.get("done") or ["(no message)"])[0]
        if told.get("kind") != ["ok"]:
            raise WebApprovalError(text)
        return text
