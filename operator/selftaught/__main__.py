import signal
import sys

try:
    from selftaught.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command loads: as quiet as Ctrl-C while it runs
    print("interrupted", file=sys.stderr)
    sys.exit(128 + signal.SIGINT)

if __name__ == "__main__":
    main()
