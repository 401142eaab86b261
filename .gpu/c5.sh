. .gpu/prefix.sh
cd benchmarks
rm -f results/train_step_*.json
timeout 120 python3 train_step.py --batch 8 --mode graph --no-inference --methods floor ether:4 ether_plus:4 peft_lora 2>&1 | grep "repeat\||" | tee $OUT/graph8.log
cp results/train_step_*.json $OUT/
