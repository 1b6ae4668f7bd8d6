# The last messages of each failed test in a go test -v log: a test's own
# log lines (file_test.go:N: ...) with up to 4 continuation lines each,
# leaving out the harness's failure dumps (pod logs, events), which are
# long and already printed above. The last 50 lines per failed test.
/^=== (RUN|CONT) / { t = $3 }
/^    [A-Za-z0-9_]+_test\.go:[0-9]+: / {
	keep = $0 !~ /^    cluster_test\.go:/
	if (keep) { add(substr($0, 1, 300)); cont = 0 }
	next
}
/^        / { if (keep && cont++ < 4) add(substr($0, 1, 300)); next }
/^--- FAIL: / {
	f = $3; k = n[f]
	print "===== " f ", its last messages:"
	for (i = (k > 50 ? k - 50 : 0); i < k; i++) print m[f, i % 50]
}
function add(line) { m[t, n[t]++ % 50] = line }
