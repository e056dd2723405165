"""``modelfleet sim wan``: emulate a WAN link (delay, jitter, loss, partitions) in user space."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from modelfleet.cli.common import say

app = typer.Typer(help="Simulation helpers: WAN emulation.", no_args_is_help=True)


@app.command()
def wan(
    listen: Annotated[str, typer.Option(help="HOST:PORT to accept connections on.")],
    upstream: Annotated[str, typer.Option(help="HOST:PORT to forward to.")],
    delay: Annotated[str, typer.Option(help="One-way delay, e.g. 40ms.")] = "0ms",
    jitter: Annotated[str, typer.Option(help="Extra uniform delay per chunk, e.g. 5ms.")] = "0ms",
    loss: Annotated[
        float, typer.Option(help="Probability a chunk is 'lost' (0-1).", min=0, max=1)
    ] = 0.0,
    loss_mode: Annotated[
        str,
        typer.Option(
            help="retransmit: a lost chunk arrives one RTO (200 ms) late, like TCP; "
            "reset: the connection is dropped."
        ),
    ] = "retransmit",
    no_handshake: Annotated[
        bool,
        typer.Option("--no-handshake", help="Do not charge new connections a handshake RTT."),
    ] = False,
) -> None:
    """Forward LISTEN -> UPSTREAM through an emulated WAN link.

    SIGUSR1 cuts the link (black-hole partition), SIGUSR2 restores it.

    \b
    Examples:
      modelfleet sim wan --listen 127.0.0.1:9700 --upstream 127.0.0.1:8700 \\
          --delay 40ms --jitter 5ms --loss 0.01
    """
    from modelfleet.sim.wan import WanLink, parse_duration

    link = WanLink(
        upstream,
        listen=listen,
        delay_s=parse_duration(delay),
        jitter_s=parse_duration(jitter),
        loss=loss,
        loss_mode="reset" if loss_mode == "reset" else "retransmit",
        handshake=not no_handshake,
    )

    async def main() -> None:
        await link.serve()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, link.cut)
        loop.add_signal_handler(signal.SIGUSR2, link.restore)
        say(
            f"wan {link.address} -> {upstream}  delay {delay} jitter {jitter} loss {loss} "
            f"({loss_mode}); SIGUSR1 cuts, SIGUSR2 restores",
            err=True,
        )
        await asyncio.Event().wait()

    if loss_mode not in ("retransmit", "reset"):
        raise typer.BadParameter("must be retransmit or reset", param_hint="'--loss-mode'")
    asyncio.run(main())
