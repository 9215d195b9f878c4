"""The GPU machine's harness (docs/performance.md): bundle.sh packs what a machine without a
package registry needs, run.sh builds and serves there and runs the steps; check, models, several
and parity measure and compare; plot draws their reports."""
