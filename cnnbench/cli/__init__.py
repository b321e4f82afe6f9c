"""The console commands (pyproject's [project.scripts]): each reads its arguments, calls the
package that does the work, and says what went wrong in one line (common.fail)."""
