"""Starting an edgemirror node for a bench script: one worker, listeners on free loopback ports,
the given TOML sections after them; returns the process and its data and admin addresses (from
the ready line the node prints once every listener is bound)."""
import os
import subprocess


def start_node(binary, work, name, sections, token="bench-token"):
    """Writes `{work}/{name}.toml` ([server] and [admin] with `token`, then `sections`), starts
    `binary` on it with its log in `{work}/{name}.log`, and waits for the ready line."""
    config = os.path.join(work, f"{name}.toml")
    with open(config, "w") as f:
        f.write(
            f'[server]\nlisten = "127.0.0.1:0"\nworkers = 1\n'
            f'[admin]\nlisten = "127.0.0.1:0"\ntoken = "{token}"\n{sections}\n'
        )
    log = open(os.path.join(work, f"{name}.log"), "w")
    proc = subprocess.Popen([binary, "--config", config], stdout=subprocess.PIPE, stderr=log, text=True)
    fields = dict(kv.split("=") for kv in proc.stdout.readline().split()[2:])
    return proc, fields["data"], fields["admin"]


def emload(binary, args):
    """Runs emload with `args` and returns its `summary:` line as a dict."""
    out = subprocess.run([binary, "--output", "line", *args], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("summary:"))
    return dict(kv.split("=", 1) for kv in line.split()[1:])
