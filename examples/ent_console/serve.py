"""Run the demo: the local SMTP outbox in a thread, then the console on 127.0.0.1:5000.

``python -m examples.ent_console.serve`` (after ``python -m examples.ent_console.seed``).
"""

from __future__ import annotations

import os
import sys

from . import create_app
from .auth import DEMO_ACCOUNTS
from .outbox import start_outbox


def main() -> int:
    app = create_app()
    host = os.environ.get("ENT_CONSOLE_HOST", "127.0.0.1")
    port = int(os.environ.get("ENT_CONSOLE_PORT", 5000))
    smtp_port = int(app.config["MAIL_PORT"])
    outbox_dir = app.config["ENT_CONSOLE_OUTBOX_DIR"]
    try:
        controller = start_outbox(outbox_dir, port=smtp_port)
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
    try:
        # No reloader: it would start a second SMTP server in the child process.
        app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)
    finally:
        if controller is not None:
            controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
