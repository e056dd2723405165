"""The hub's web dashboard at ``/ui``: server-rendered pages over the hub's own services.

Stack (see docs/dashboard.md for why): Jinja templates rendered by the hub process, htmx for
partial updates and server-sent events, uPlot for charts; the JavaScript is vendored from
npm under ``static/vendor`` with its licences, so a hub in a private network needs no CDN.

- :mod:`.session` — sign-in: a bearer token exchanged for a session cookie; CSRF checks;
- :mod:`.render` — the Jinja environment, the signed-in viewer, security headers;
- :mod:`.app` — mounts the pages, the static files and the sign-in routes on the hub;
- :mod:`.pages` — one module per page, each with its JSON twin in the API.

This package imports nothing from :mod:`.app` at import time (the API's dependencies import
:mod:`.session`).
"""
