# The harness's "test NAME ... VERDICT" lines of a console log, printed as "NAME VERDICT"
# (tests/vm_harness.rs holds its cases). Trials run in parallel and print their own lines,
# so another trial's line can land between "test NAME ... " and its verdict, which then
# starts a line of its own; and the console can append another writer's bytes right after
# a verdict ("ok7"), so a verdict is the word a line starts with, not the whole line.
{ gsub(/\x1b\[[0-9;]*m/, ""); gsub(/\r/, "") }
pending != "" && match($0, /^(ok|FAILED|ignored)/) { print pending, substr($0, 1, RLENGTH); pending = ""; next }
/^test [a-z0-9_:-]+ +\.\.\. / {
  rest = $0; sub(/^test [^ ]+ +\.\.\. /, "", rest)
  if (match(rest, /^(ok|FAILED|ignored)/)) print $2, substr(rest, 1, RLENGTH)
  else pending = $2
}
END { if (pending != "") print pending, "no-verdict" }
