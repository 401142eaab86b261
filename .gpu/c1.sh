. .gpu/prefix.sh
cd benchmarks
timeout 570 python3 train_step.py --batch 4 --mode compile --no-inference --deadline 430 --methods floor ether:4 ether_plus:4 floor+fused_qkv 2>&1 | grep -v "Warning\|warn\|originates\|upsampling.py\|^$\|dtype == torch" | tee $OUT/c1.log
cp results/*.json $OUT/ 2>/dev/null
