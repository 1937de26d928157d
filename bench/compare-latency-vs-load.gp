# One-way latency (p50 solid, p99 dashed) against offered load; see compare-common.gp.
load dir.'/compare-common.gp'
set title "One-way latency vs offered load (open loop, pairs, 4 clients, 1200 B)\n{/*0.8 ".subtitle."}"
set xlabel 'Offered load (data packets/s, all senders together)'
set ylabel 'One-way latency (µs, log scale)'
set logscale y 10
set format x '%.0s%c'
set offsets graph 0.05, graph 0.05, 0, 0
plot for [i=1:n] file('latency', i) using 1:2:3:4:xtic(1) with yerrorlines ls i dt 1 title word(servers, i).' p50', \
     for [i=1:n] file('latency', i) using 1:5:6:7 with yerrorlines ls i dt 2 title word(servers, i).' p99'
