# Shared by the scripts under bench/ (source it): quiet CMD... runs a step
# whose output nobody needs, and on failure prints the step and all it said,
# then stops the script, so a benchmark never stops without a word.
quiet() {
  local log
  log="$(mktemp)"
  if ! "$@" > "$log" 2>&1; then
    echo "bench: this step failed: $*" >&2
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}
