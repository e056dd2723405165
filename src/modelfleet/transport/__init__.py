"""The HTTP layer every other package uses, so that each concern exists once.

==================  ==================================================================
module              holds
==================  ==================================================================
``session``         :class:`~modelfleet.transport.session.HubSession`: every call to the
                    hub's API (SDK, CLI, site agent, routing directory): one httpx pool,
                    the credential, the error mapping (``raise_for_response``),
                    resumable downloads, ``poll_timeout`` for long-polls
``client``          :class:`~modelfleet.transport.client.Pool`, ``Origin``,
                    ``HttpResponse``, ``TransportFailure``: the small keep-alive client
                    the router (SDK, gateway) and the cascade use to reach sites
``server``          ``serve_http``, ``start_builtin``, ``Engine``: the HTTP/1.1 server
                    (uvloop + httptools, one write per response) the sites and the
                    gateway run on; uvicorn as the alternative engine
``listen``          ``bind``, ``bound_port``, ``report_ready``, ``read_ready_file``: the
                    listening socket of a server command and its ready file
``asgi``            ``Scope``, ``Receive``, ``Send``, ``Message``, ``ASGIApp``,
                    ``header``, ``read_body``, ``respond``, ``Lifespan``: plain ASGI for
                    the hand-written hot paths
==================  ==================================================================

Two clients on purpose: hub calls are few, blocking and long-polled from threads, where
httpx's completeness costs nothing; requests to sites are the data plane, where every
tenth of a millisecond shows (``bench/gateway_clients.py``, docs/benchmarks.md).

TLS (next): certificates are configured in ``HubSession._build`` for every hub call,
``Pool._connect`` for site calls and ``start_builtin`` (or uvicorn's options) for serving.

Imports only :mod:`modelfleet.errors` from the rest of the package; ``oip/`` holds the
protocol's paths and header names, so this layer knows nothing of models.
"""
