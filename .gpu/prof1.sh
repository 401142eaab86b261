. .gpu/prefix.sh
cd benchmarks
timeout 560 python3 profile_step.py --batch 4 --compile --steps 5 --top 12 --methods floor ether:4 ether_plus:4 2>&1 | grep -v Warning | tee $OUT/profile_compile_bs4.log
