"""Run the demo: the local SMTP outbox in a thread, then the console on 127.0.0.1:5000.

``python -m examples.ent_console.serve`` (after ``python -m examples.ent_console.seed``).
The ports come from ``ENT_CONSOLE_PORT`` (the console, 5000) and
``ENT_CONSOLE_SMTP_PORT`` (the SMTP outbox, 8025), the address from ``ENT_CONSOLE_HOST``.
"""

from __future__ import annotations

import os
import sys

from . import create_app, env_port
from .auth import DEMO_ACCOUNTS
from .outbox import start_console_outbox

DEFAULT_PORT = 5000


def main() -> int:
    try:
        port = env_port("ENT_CONSOLE_PORT", DEFAULT_PORT)
        app = create_app()  # reads ENT_CONSOLE_SMTP_PORT
    except ValueError as error:
        print(f"Démonstration non démarrée : {error}", file=sys.stderr)
        return 2
    host = os.environ.get("ENT_CONSOLE_HOST", "127.0.0.1")
    smtp_port = int(app.config["MAIL_PORT"])
    outbox_dir = app.config["ENT_CONSOLE_OUTBOX_DIR"]
    try:
        controller = start_console_outbox(app)
    except (OSError, RuntimeError) as error:
        # Another outbox (python -m examples.ent_console.outbox) may already listen there.
        controller = None
        print(f"Serveur SMTP de démonstration non démarré sur le port {smtp_port} : {error}", file=sys.stderr)

    print("ENT Lumière — console d'administration de démonstration")
    print(f"  Console : http://{host}:{port}/")
    print(f"  SMTP    : 127.0.0.1:{smtp_port}, messages dans {outbox_dir} (page « Boîte d'envoi »)")
    print(f"  Base    : {app.config['SQLALCHEMY_DATABASE_URI']}")
    print("  Comptes de démonstration :")
    for login, password, role in DEMO_ACCOUNTS:
        print(f"    {login:<13} / {password:<5} {role}")
    sys.stdout.flush()
    try:
        # No reloader: it would start a second SMTP server in the child process.
        app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)
    finally:
        if controller is not None:
            controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
