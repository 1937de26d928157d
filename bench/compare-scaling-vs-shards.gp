# Delivered packets/s against derpd's --shards; see compare-common.gp.
load dir.'/compare-common.gp'
# scaling_load: the load, as bench/compare ran it (topology, clients, budget).
if (!exists("scaling_load")) scaling_load = 'pairs, 8 clients, window 32, 1200 B'
set title "Scaling vs shards (closed loop, ".scaling_load.")\n{/*0.8 ".subtitle."}"
set xlabel 'derpd --shards (worker threads)'
set ylabel 'Delivered data packets (thousands/s)'
set y2label 'Delivered payload (Gbit/s, 1200 B packets)'
set yrange [0:*]
# 1200 B payload: Gbit/s = kpps * 1000 * 1200 * 8 / 1e9
set link y2 via y*0.0096 inverse y/0.0096
set y2tics 2
set autoscale xfix
set xtics 1
set offsets 0.3, 0.3, graph 0.1, 0
set key bottom right
plot for [i=1:n] file('scaling', i) using 1:2:3:4 with yerrorlines ls i title word(servers, i)
