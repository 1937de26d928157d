# Throughput against payload size: Gbit/s (left) and kpps (right); see compare-common.gp.
load dir.'/compare-common.gp'
set multiplot layout 1,2 title "Relay throughput vs packet size (closed loop, pairs, 4 clients, window 32)\n{/*0.8 ".subtitle."}"
set logscale x 10
set xlabel 'Payload size (bytes, log scale)'
set ylabel 'Delivered payload (Gbit/s)'
set yrange [0:*]
set offsets graph 0.05, graph 0.05, graph 0.08, 0
if (ceil_half > 0) {
  plot for [i=1:n] file('size', i) using 1:2:3:4:xtic(1) with yerrorlines ls i title word(servers, i), \
       ceil_half with lines dt 2 lc rgb '#555555' title sprintf('loopback ceiling / 2 (%.1f Gbit/s)', ceil_half)
} else {
  plot for [i=1:n] file('size', i) using 1:2:3:4:xtic(1) with yerrorlines ls i title word(servers, i)
}
set ylabel 'Delivered data packets (thousands/s)'
set key top right
plot for [i=1:n] file('size', i) using 1:5:6:7:xtic(1) with yerrorlines ls i title word(servers, i)
unset multiplot
