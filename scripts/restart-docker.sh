#!/usr/bin/env bash
# Restarts the Docker daemon the way scripts/lib.sh started it and waits until it answers
# again (used by the daemon-restart fault-injection test). Stops every container!
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
restart_docker
