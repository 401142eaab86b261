. .gpu/prefix.sh
cd benchmarks
timeout 230 python3 train_step.py --batch 4 --mode eager --repeats 5 --methods floor ether:4 ether_plus:4 peft_lora floor+fused_qkv 2>&1 | grep -v "Warning\|warn\|originates\|upsampling.py\|^$\|dtype == torch" | tee $OUT/eager.log
timeout 80 python3 train_step.py --batch 1 --mode graph --no-inference --methods floor ether:4 ether_plus:4 peft_lora 2>&1 | grep "repeat\||" | tee $OUT/graph1.log
timeout 110 python3 train_step.py --batch 8 --mode graph --no-inference --methods floor ether:4 ether_plus:4 peft_lora 2>&1 | grep "repeat\||" | tee $OUT/graph8.log
cp results/train_step_*.json $OUT/
