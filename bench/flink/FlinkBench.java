// The Apache Flink baseline of Weir's benchmarks: the workloads of bench/WORKLOADS.md
// written against Flink's DataStream API, run in a local mini-cluster.
//
// usage (bench/flink/run.sh does the class path and compilation):
//   java FlinkBench QUERY EVENTS PARALLELISM [CHECKPOINT_MS]
//   QUERY: orders-window | orders-dedup | orders-sliding | orders-payments | q0 | q1 | q2 | q5 | q7
//
// Prints one line on stdout:
//   query= events= parallelism= net_ms= cpu_ms= events_per_s= outputs= checksum=
// where outputs/checksum are the row count and the order-independent checksum of
// WORKLOADS.md, so the line can be compared with `weir bench` and the oracles.
//
// Every event is generated from its number inside the job (a parallel sequence
// source mapped through the generators below). Output rows are folded into the
// checksum by a sink and then dropped. Rows that a window or the join would drop
// as late are counted; WORKLOADS.md promises there are none, so any is an error.
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.stream.Stream;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.co.ProcessJoinFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.WindowAssigner;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

public final class FlinkBench {

  // ===================================================================
  // Event generators, exactly as bench/WORKLOADS.md defines them.
  // ===================================================================

  static final long T0 = 1_700_000_000_000L;
  static final String[] REGIONS = {"north", "south", "east", "west"};
  static final String[] CHANNELS = {"Google", "Facebook", "Baidu", "Apple"};
  static final long PAYMENT_SALT = 0x2545F4914F6CDD1DL;
  static final long BID_SALT = 0x5851F42D4C957F2DL;
  static final String PADDING = "x".repeat(100);

  /** SplitMix64 finaliser (wrapping arithmetic, logical shifts). */
  static long mix(long z) {
    z += 0x9E3779B97F4A7C15L;
    z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
    z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
    return z ^ (z >>> 31);
  }

  /** Unsigned remainder, as `%` on a hash means in WORKLOADS.md. */
  static long mod(long x, long m) {
    return Long.remainderUnsigned(x, m);
  }

  /** Whether order n is a re-sent copy of order n - 1. */
  static boolean resent(long n) {
    return n > 0 && mod(mix(n) >>> 20, 100) < 2;
  }

  public static class Order {
    public String orderId;
    public String region;
    public long amount;
    public long time;

    public Order() {}
  }

  static Order order(long n) {
    while (resent(n)) n--;
    long r = mix(n);
    Order o = new Order();
    o.orderId = "ORD-" + n;
    o.region = REGIONS[(int) mod(r, 4)];
    o.amount = 10 + mod(r >>> 8, 991);
    o.time = T0 + n - mod(r >>> 32, 5000);
    return o;
  }

  public static class Payment {
    public String orderId;
    public long amount;
    public long time;

    public Payment() {}
  }

  /** Emits the payment of order number n, if it has one. */
  static void payment(long n, Collector<Payment> out) {
    if (resent(n)) return;
    long q = mix(n ^ PAYMENT_SALT);
    if (mod(q, 100) < 5) return;
    Order o = order(n);
    Payment p = new Payment();
    p.orderId = o.orderId;
    p.amount = o.amount;
    p.time = o.time + 1000 + mod(q >>> 8, 120_000);
    out.collect(p);
  }

  public static class Bid {
    public long auction;
    public long bidder;
    public long price;
    public String channel;
    public long time;
    public String extra;

    public Bid() {}
  }

  static Bid bid(long n) {
    long r = mix(n);
    long s = mix(n ^ BID_SALT);
    long block = n / 50;
    long newest = 1000 + 3 * block;
    Bid b = new Bid();
    b.auction = (r & 1) == 0 ? newest / 100 * 100 : newest - mod(r >>> 1, 100);
    b.bidder = 1000 + block - mod(r >>> 16, Math.min(1000, block + 1));
    b.price = 100 + mod(r >>> 32, 100_000);
    b.channel = CHANNELS[(int) mod(s, 4)];
    b.time = T0 + n / 10 - mod(s >>> 8, 2000);
    b.extra = PADDING.substring(0, 40 + (int) mod(s >>> 24, 60));
    return b;
  }

  // ===================================================================
  // Output rows and their hashes.
  // ===================================================================

  /** (region, window_start, count, sum): orders-window, orders-dedup, orders-payments. */
  public static class RegionRow {
    public String region;
    public long windowStart;
    public long count;
    public long sum;

    public RegionRow() {}

    long hash() {
      return regionIndex(region) * 31L + windowStart * 7 + count * 3 + sum;
    }
  }

  static int regionIndex(String region) {
    for (int i = 0; i < REGIONS.length; i++) if (REGIONS[i].equals(region)) return i;
    throw new IllegalArgumentException("unknown region " + region);
  }

  /** (window_end, auction, value): q5 (value = count) and q7 (value = price). */
  public static class EndRow {
    public long windowEnd;
    public long auction;
    public long value;

    public EndRow() {}

    static EndRow of(long windowEnd, long auction, long value) {
      EndRow r = new EndRow();
      r.windowEnd = windowEnd;
      r.auction = auction;
      r.value = value;
      return r;
    }

    long hash() {
      return windowEnd * 31 + auction * 7 + value;
    }

    /** Whether this row beats `other` in its window: larger value, then smaller auction. */
    boolean beats(EndRow other) {
      return value > other.value || (value == other.value && auction < other.auction);
    }
  }

  // ===================================================================
  // Sinks: fold row hashes into the run's totals, process-wide (the
  // mini-cluster runs every subtask in this JVM).
  // ===================================================================

  static final AtomicLong OUTPUTS = new AtomicLong();
  static final AtomicLong CHECKSUM = new AtomicLong();
  static final AtomicLong LATE = new AtomicLong();

  /** Sums mix(hash) over the row hashes it receives; publishes its totals when closed. */
  public static class ChecksumSink implements Sink<Long> {
    public SinkWriter<Long> createWriter(WriterInitContext context) {
      return new SinkWriter<Long>() {
        long rows, sum;

        public void write(Long h, Context c) {
          rows++;
          sum += mix(h);
        }

        public void flush(boolean endOfInput) {}

        public void close() {
          OUTPUTS.addAndGet(rows);
          CHECKSUM.addAndGet(sum);
          rows = 0;
          sum = 0;
        }
      };
    }
  }

  /** Counts what it receives as late (dropped) elements. */
  public static class LateSink<T> implements Sink<T> {
    public SinkWriter<T> createWriter(WriterInitContext context) {
      return new SinkWriter<T>() {
        public void write(T element, Context c) {
          LATE.incrementAndGet();
        }

        public void flush(boolean endOfInput) {}

        public void close() {}
      };
    }
  }

  static <T> void countLate(SingleOutputStreamOperator<?> op, OutputTag<T> tag) {
    op.getSideOutput(tag).sinkTo(new LateSink<T>()).name("late " + tag.getId());
  }

  // ===================================================================
  // Operators.
  // ===================================================================

  /** count and sum(amount) of orders. */
  public static class CountAndSum implements AggregateFunction<Order, long[], long[]> {
    public long[] createAccumulator() {
      return new long[2];
    }

    public long[] add(Order o, long[] acc) {
      acc[0] += 1;
      acc[1] += o.amount;
      return acc;
    }

    public long[] getResult(long[] acc) {
      return acc;
    }

    public long[] merge(long[] a, long[] b) {
      a[0] += b[0];
      a[1] += b[1];
      return a;
    }
  }

  /** Turns a region's window aggregate into its row. */
  public static class ToRegionRow extends ProcessWindowFunction<long[], RegionRow, String, TimeWindow> {
    public void process(String region, Context ctx, Iterable<long[]> aggs, Collector<RegionRow> out) {
      long[] acc = aggs.iterator().next();
      RegionRow row = new RegionRow();
      row.region = region;
      row.windowStart = ctx.window().getStart();
      row.count = acc[0];
      row.sum = acc[1];
      out.collect(row);
    }
  }

  /** Passes the first order of each order_id (the stream is keyed by order_id). */
  public static class FirstOfKey extends KeyedProcessFunction<String, Order, Order> {
    private transient ValueState<Boolean> seen;

    public void open(OpenContext ctx) {
      seen = getRuntimeContext().getState(new ValueStateDescriptor<>("seen", Boolean.class));
    }

    public void processElement(Order o, Context ctx, Collector<Order> out) throws Exception {
      if (seen.value() == null) {
        seen.update(Boolean.TRUE);
        out.collect(o);
      }
    }
  }

  /** An order joined with its payment: the order's region and amount, at the payment's time. */
  public static class PaidOrder extends ProcessJoinFunction<Order, Payment, Order> {
    public void processElement(Order o, Payment p, Context ctx, Collector<Order> out) {
      Order paid = new Order();
      paid.orderId = o.orderId;
      paid.region = o.region;
      paid.amount = o.amount;
      paid.time = p.time;
      out.collect(paid);
    }
  }

  /** Bids per auction in a window. */
  public static class CountBids implements AggregateFunction<Bid, Long, Long> {
    public Long createAccumulator() {
      return 0L;
    }

    public Long add(Bid b, Long acc) {
      return acc + 1;
    }

    public Long getResult(Long acc) {
      return acc;
    }

    public Long merge(Long a, Long b) {
      return a + b;
    }
  }

  /** Labels an auction's per-window value (bid count or top price) with the window's end. */
  public static class ToEndRow extends ProcessWindowFunction<Long, EndRow, Long, TimeWindow> {
    public void process(Long auction, Context ctx, Iterable<Long> values, Collector<EndRow> out) {
      out.collect(EndRow.of(ctx.window().getEnd(), auction, values.iterator().next()));
    }
  }

  /** The higher price of two bids' prices. */
  public static class MaxPrice implements AggregateFunction<Bid, Long, Long> {
    public Long createAccumulator() {
      return Long.MIN_VALUE;
    }

    public Long add(Bid b, Long acc) {
      return Math.max(acc, b.price);
    }

    public Long getResult(Long acc) {
      return acc;
    }

    public Long merge(Long a, Long b) {
      return Math.max(a, b);
    }
  }

  /**
   * Keyed by window end: keeps the best of the per-auction rows of that window and
   * emits it once the watermark passes the window (every upstream subtask has then
   * fired that window, so all its rows have arrived).
   */
  public static class BestOfWindow extends KeyedProcessFunction<Long, EndRow, EndRow> {
    private transient ValueState<EndRow> best;

    public void open(OpenContext ctx) {
      best = getRuntimeContext().getState(new ValueStateDescriptor<>("best", EndRow.class));
    }

    public void processElement(EndRow row, Context ctx, Collector<EndRow> out) throws Exception {
      EndRow cur = best.value();
      if (cur == null) ctx.timerService().registerEventTimeTimer(row.windowEnd - 1);
      if (cur == null || row.beats(cur)) best.update(row);
    }

    public void onTimer(long ts, OnTimerContext ctx, Collector<EndRow> out) throws Exception {
      out.collect(best.value());
      best.clear();
    }
  }

  // ===================================================================
  // Pipelines.
  // ===================================================================

  static final Duration ORDERS_DELAY = Duration.ofSeconds(5);
  static final Duration PAYMENTS_DELAY = Duration.ofSeconds(126);
  static final Duration BIDS_DELAY = Duration.ofSeconds(2);

  static DataStream<Order> orders(StreamExecutionEnvironment env, long events) {
    return env.fromSequence(0, events - 1).name("order numbers")
        .map(FlinkBench::order).returns(Order.class).name("orders")
        .assignTimestampsAndWatermarks(
            WatermarkStrategy.<Order>forBoundedOutOfOrderness(ORDERS_DELAY).withTimestampAssigner((o, ts) -> o.time));
  }

  static DataStream<Payment> payments(StreamExecutionEnvironment env, long events) {
    return env.fromSequence(0, events - 1).name("payment numbers")
        .flatMap(FlinkBench::payment).returns(Payment.class).name("payments")
        .assignTimestampsAndWatermarks(
            WatermarkStrategy.<Payment>forBoundedOutOfOrderness(PAYMENTS_DELAY).withTimestampAssigner((p, ts) -> p.time));
  }

  static DataStream<Bid> bids(StreamExecutionEnvironment env, long events) {
    return env.fromSequence(0, events - 1).name("bid numbers").map(FlinkBench::bid).returns(Bid.class).name("bids");
  }

  static DataStream<Bid> timedBids(StreamExecutionEnvironment env, long events) {
    return bids(env, events).assignTimestampsAndWatermarks(
        WatermarkStrategy.<Bid>forBoundedOutOfOrderness(BIDS_DELAY).withTimestampAssigner((b, ts) -> b.time));
  }

  /** Per region, one-minute tumbling windows of count and sum(amount), into the checksum. */
  static void perRegionMinute(DataStream<Order> orders) {
    perRegionWindow(orders, TumblingEventTimeWindows.of(Duration.ofMinutes(1)));
  }

  static void perRegionWindow(DataStream<Order> orders, WindowAssigner<Object, TimeWindow> windows) {
    OutputTag<Order> late = new OutputTag<Order>("late-orders") {};
    SingleOutputStreamOperator<RegionRow> rows = orders
        .keyBy(o -> o.region)
        .window(windows)
        .sideOutputLateData(late)
        .aggregate(new CountAndSum(), new ToRegionRow()).name("region window");
    countLate(rows, late);
    rows.map(RegionRow::hash).returns(Long.class).sinkTo(new ChecksumSink()).name("checksum");
  }

  /** Per window end, the best per-auction row, into the checksum. */
  static void bestPerWindow(DataStream<EndRow> rows) {
    rows.keyBy(r -> r.windowEnd)
        .process(new BestOfWindow()).name("best of window")
        .map(EndRow::hash).returns(Long.class)
        .sinkTo(new ChecksumSink()).name("checksum");
  }

  static void build(String query, StreamExecutionEnvironment env, long events) {
    switch (query) {
      case "orders-window":
        perRegionMinute(orders(env, events));
        break;
      case "orders-sliding":
        perRegionWindow(orders(env, events), SlidingEventTimeWindows.of(Duration.ofHours(1), Duration.ofSeconds(10)));
        break;
      case "orders-dedup":
        perRegionMinute(orders(env, events).keyBy(o -> o.orderId).process(new FirstOfKey()).name("dedup"));
        break;
      case "orders-payments": {
        OutputTag<Order> lateOrders = new OutputTag<Order>("late-join-orders") {};
        OutputTag<Payment> latePayments = new OutputTag<Payment>("late-join-payments") {};
        SingleOutputStreamOperator<Order> paid = orders(env, events).keyBy(o -> o.orderId)
            .intervalJoin(payments(env, events).keyBy(p -> p.orderId))
            .between(Duration.ZERO, Duration.ofMinutes(2)) // both bounds inclusive
            .sideOutputLeftLateData(lateOrders)
            .sideOutputRightLateData(latePayments)
            .process(new PaidOrder()).name("orders x payments");
        countLate(paid, lateOrders);
        countLate(paid, latePayments);
        // The joined row's timestamp is the later of the two, the payment's.
        perRegionMinute(paid);
        break;
      }
      case "q0":
        bids(env, events).map(b -> b.auction + b.price).returns(Long.class)
            .sinkTo(new ChecksumSink()).name("checksum");
        break;
      case "q1":
        bids(env, events).map(b -> b.auction * 31 + (long) (b.price * 0.908)).returns(Long.class)
            .sinkTo(new ChecksumSink()).name("checksum");
        break;
      case "q2":
        bids(env, events).filter(b -> b.auction % 123 == 0).map(b -> b.auction * 31 + b.price).returns(Long.class)
            .sinkTo(new ChecksumSink()).name("checksum");
        break;
      case "q5": {
        OutputTag<Bid> late = new OutputTag<Bid>("late-bids") {};
        SingleOutputStreamOperator<EndRow> counts = timedBids(env, events)
            .keyBy(b -> b.auction)
            .window(SlidingEventTimeWindows.of(Duration.ofSeconds(10), Duration.ofSeconds(2)))
            .sideOutputLateData(late)
            .aggregate(new CountBids(), new ToEndRow()).name("bids per auction");
        countLate(counts, late);
        bestPerWindow(counts);
        break;
      }
      case "q7": {
        OutputTag<Bid> late = new OutputTag<Bid>("late-bids") {};
        SingleOutputStreamOperator<EndRow> tops = timedBids(env, events)
            .keyBy(b -> b.auction)
            .window(TumblingEventTimeWindows.of(Duration.ofSeconds(10)))
            .sideOutputLateData(late)
            .aggregate(new MaxPrice(), new ToEndRow()).name("top price per auction");
        countLate(tops, late);
        bestPerWindow(tops);
        break;
      }
      default:
        throw new IllegalArgumentException("unknown query " + query);
    }
  }

  static long processCpuNanos() {
    return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime();
  }

  static void deleteTree(Path root) throws IOException {
    if (root == null) return;
    try (Stream<Path> paths = Files.walk(root)) {
      paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    }
  }

  static final String USAGE = "usage: FlinkBench QUERY EVENTS PARALLELISM [CHECKPOINT_MS]\n"
      + "  QUERY: orders-window | orders-dedup | orders-sliding | orders-payments | q0 | q1 | q2 | q5 | q7";

  public static void main(String[] args) throws Exception {
    if (args.length < 3 || args.length > 4) {
      System.err.println(USAGE);
      System.exit(2);
    }
    String query = args[0];
    long events = Long.parseLong(args[1]);
    int parallelism = Integer.parseInt(args[2]);
    long checkpointMs = args.length > 3 ? Long.parseLong(args[3]) : 0;
    if (events < 1 || parallelism < 1 || checkpointMs < 0) {
      System.err.println(USAGE + "\n  EVENTS and PARALLELISM must be positive, CHECKPOINT_MS not negative");
      System.exit(2);
    }

    // A failure ends the run (no restarts). Checkpoints, when asked for, go to files
    // in a temporary directory: the join's and windows' state outgrows the default
    // in-memory checkpoint storage.
    Configuration conf = new Configuration();
    conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
    Path checkpoints = null;
    if (checkpointMs > 0) {
      checkpoints = Files.createTempDirectory("weir-flink-checkpoints");
      conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
      conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, checkpoints.toUri().toString());
    }
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
    env.setParallelism(parallelism);
    if (checkpointMs > 0) env.enableCheckpointing(checkpointMs);
    build(query, env, events);

    long cpuBefore = processCpuNanos();
    JobExecutionResult result;
    try {
      result = env.execute("weir flink baseline " + query);
    } finally {
      deleteTree(checkpoints);
    }
    long cpuMs = (processCpuNanos() - cpuBefore) / 1_000_000;
    long netMs = Math.max(1, result.getNetRuntime());

    System.out.printf("query=%s events=%d parallelism=%d net_ms=%d cpu_ms=%d events_per_s=%.0f outputs=%d checksum=%d%n",
        query, events, parallelism, netMs, cpuMs, events * 1000.0 / netMs, OUTPUTS.get(), CHECKSUM.get());
    if (LATE.get() > 0) {
      System.err.println("FlinkBench: " + LATE.get() + " late element(s) were dropped; WORKLOADS.md says there are none");
      System.exit(1);
    }
  }
}
