# Shared by bench/compare's plots. Set by the caller (gnuplot -e): datadir,
# outfile, servers (space-separated names), ceil_half (Gbit/s, 0 = none), subtitle.
set terminal pngcairo size 1000,600 enhanced font 'DejaVu Sans,11' linewidth 1.5
set output outfile
set grid back lc rgb '#dddddd'
set key top left box opaque
set border 3
set xtics nomirror
set ytics nomirror
set style line 1 lc rgb '#1f77b4' pt 7 ps 1.2
set style line 2 lc rgb '#d62728' pt 5 ps 1.2
set style line 3 lc rgb '#2ca02c' pt 9 ps 1.2
set style line 4 lc rgb '#9467bd' pt 11 ps 1.2
set bars small
n = words(servers)
file(prefix, i) = datadir.'/'.prefix.'-'.word(servers, i).'.dat'
