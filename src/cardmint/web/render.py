"""One way to turn a template and its context into a response.

Templates are autoescaped Jinja2; every page gets `request`, `session` (or None) and
`csrf` (the value a write form's hidden `csrf` field must carry) without passing them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape

from cardmint import printings
from cardmint.catalog import images
from cardmint.web.session import forget_stale

__all__ = ["environment", "money", "render"]

TEMPLATES = Path(__file__).parent / "templates"

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,  # a typo in a template fails its test, not silently
    trim_blocks=True,
    lstrip_blocks=True,
)


def money(value: Any, currency: str = "USD") -> str:
    """A price for people: `$12.50`; an absent price is a dash, not `None`."""
    if value is None:
        return "—"
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{symbol}{amount:,}"


def when(value: Any) -> str:
    """A timestamp to the minute, in UTC as stored: `2026-05-01 14:03 UTC`."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def printing(row: Any, prefix: str = "variant_") -> str:
    """A printing named in full, from a variant (`type`, `subtype`...) or from a row
    that carries them as `variant_type`, `variant_subtype`... (inventory items)."""
    keys = ("type", "subtype", "size", "foil", "stamps")
    if "type" in row:
        return printings.name(row)
    return printings.name({k: row.get(prefix + k) for k in keys})


def code(text: Any) -> Markup:
    """Text whose `backticked` parts are commands: escaped, the commands as <code>, so a
    page never shows literal backticks."""
    parts = escape(str(text or "")).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick stays as it is
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


environment.filters["money"] = money
environment.filters["code"] = code
environment.filters["when"] = when
environment.filters["printing"] = printing
environment.globals["image_url"] = images.image_url


def render(request: Request, template_name: str, *, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """The template rendered for this request, as an HTML response."""
    session = getattr(request.state, "web_session", None)
    remote = remote_images(request)
    page = environment.get_template(template_name).render(
        request=request, session=session, csrf=session.csrf if session else "",
        remote_images=remote, **context)
    # pages show one person's data: never cached by a shared cache, nor kept after sign-out
    response = HTMLResponse(page, status_code=status_code,
                            headers={"Cache-Control": "no-store",
                                     "X-Content-Type-Options": "nosniff",
                                     "Referrer-Policy": "same-origin",
                                     "Content-Security-Policy": csp(remote)})
    return forget_stale(request, response)


# Only our own files: no inline script, no framing, and no third-party origin but the
# card images' host, and that only while remote images are on.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
CSP_WITH_IMAGES = CSP.replace("img-src 'self' data:", f"img-src 'self' data: {images.ORIGIN}")


def csp(remote: bool) -> str:
    return CSP_WITH_IMAGES if remote else CSP


def remote_images(request: Request) -> bool:
    """The operator's setting (CARDMINT_REMOTE_IMAGES); on when the app has no settings."""
    settings = getattr(request.app.state, "settings", None)
    return bool(getattr(settings, "remote_images", True))
