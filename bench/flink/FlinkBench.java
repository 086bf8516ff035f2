// The Apache Flink baseline of Weir's benchmarks: the workloads of bench/WORKLOADS.md
// written against Flink's DataStream API, run in a local mini-cluster.
//
// usage (bench/flink/run.sh does the class path and compilation):
//   java FlinkBench QUERY EVENTS PARALLELISM [CHECKPOINT_MS] [--rate R] [--buffer-timeout-ms MS]
//                   [--state-backend hashmap|rocksdb [--state-dir DIR]]
//   QUERY: orders-window | orders-dedup | orders-sliding | orders-payments | q0 | q1 | q2 | q5 | q7
//
// Prints one line on stdout:
//   query= events= parallelism= net_ms= cpu_ms= events_per_s= outputs= checksum=
// With --rate (q1 and orders-window), the events are held to R per second over
// all subtasks and the line ends with latency_p50_ms= latency_p99_ms=: for q1,
// each row is stamped as its bid is let go and timed from there to the sink,
// one rebalance away, as `weir bench q1 --rate R` measures it; for
// orders-window, each window's row is timed from the source's emission of the
// watermark that fired the window to the sink, as `weir bench orders-window
// --rate R` measures it. --buffer-timeout-ms
// sets Flink's buffer timeout (setBufferTimeout; 100 ms when not given).
// --state-backend rocksdb keeps keyed state in Flink's embedded RocksDB
// (state.backend.type: rocksdb, with its default managed memory), its files
// under --state-dir (the system's temporary directory by default); hashmap,
// the default, keeps it on the heap.
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
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.locks.LockSupport;
import java.util.stream.Stream;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.co.ProcessJoinFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.WindowAssigner;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
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

  /** A q1 row's hash and the moment (System.nanoTime) its bid was let go. */
  public static class Stamped {
    public long hash;
    public long at;

    public Stamped() {}
  }

  /**
   * Holds a subtask's records to its share of `rate` records per second
   * (parking when more than a millisecond ahead).
   */
  public abstract static class Paced<I, O> extends RichMapFunction<I, O> {
    final double rate;
    double nanosPerRecord;
    long start;
    long emitted;

    Paced(double rate) {
      this.rate = rate;
    }

    @Override
    public void open(OpenContext context) {
      nanosPerRecord = 1e9 * getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks() / rate;
      start = System.nanoTime();
    }

    void pace() {
      long ahead = start + (long) (emitted++ * nanosPerRecord) - System.nanoTime();
      if (ahead > 1_000_000) LockSupport.parkNanos(ahead);
    }
  }

  /** Bids held to the rate, each mapped to its q1 row, stamped. */
  public static class PacedQ1 extends Paced<Bid, Stamped> {
    PacedQ1(double rate) {
      super(rate);
    }

    @Override
    public Stamped map(Bid b) {
      pace();
      Stamped s = new Stamped();
      s.hash = b.auction * 31 + (long) (b.price * 0.908);
      s.at = System.nanoTime();
      return s;
    }
  }

  /** Orders held to the rate. */
  public static class PacedOrders extends Paced<Order, Order> {
    PacedOrders(double rate) {
      super(rate);
    }

    @Override
    public Order map(Order o) {
      pace();
      return o;
    }
  }

  /**
   * Every probe's watermarks and the moment (System.nanoTime) each passed it,
   * as pairs, published when it closes.
   */
  static final List<long[]> WATERMARKS = new ArrayList<>();

  /**
   * Passes records and watermarks on as they are, noting when each watermark
   * passed: chained right after the timestamp assigner, that is when the
   * source subtask emitted it.
   */
  public static class WatermarkProbe<T> extends AbstractStreamOperator<T> implements OneInputStreamOperator<T, T> {
    private long[] marks = new long[1 << 10];
    private int n;

    @Override
    public void processElement(StreamRecord<T> record) {
      output.collect(record);
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
      if (n + 2 > marks.length) marks = Arrays.copyOf(marks, marks.length * 2);
      marks[n++] = mark.getTimestamp();
      marks[n++] = System.nanoTime();
      super.processWatermark(mark);
    }

    @Override
    public void close() throws Exception {
      synchronized (WATERMARKS) {
        WATERMARKS.add(Arrays.copyOf(marks, n));
      }
      n = 0;
      super.close();
    }
  }

  /** Every window-row sink's rows: each window's last millisecond and the row's arrival, as pairs. */
  static final List<long[]> ARRIVALS = new ArrayList<>();

  /** The checksum sink of region rows, which also notes when each row arrived. */
  public static class WindowLatencySink implements Sink<RegionRow> {
    final long windowMs;

    WindowLatencySink(long windowMs) {
      this.windowMs = windowMs;
    }

    public SinkWriter<RegionRow> createWriter(WriterInitContext context) {
      return new SinkWriter<RegionRow>() {
        long rows, sum;
        long[] arrivals = new long[1 << 12];

        public void write(RegionRow r, Context c) {
          if (2 * rows + 2 > arrivals.length) arrivals = Arrays.copyOf(arrivals, arrivals.length * 2);
          arrivals[(int) (2 * rows)] = r.windowStart + windowMs - 1;
          arrivals[(int) (2 * rows + 1)] = System.nanoTime();
          rows++;
          sum += mix(r.hash());
        }

        public void flush(boolean endOfInput) {}

        public void close() {
          OUTPUTS.addAndGet(rows);
          CHECKSUM.addAndGet(sum);
          synchronized (ARRIVALS) {
            ARRIVALS.add(Arrays.copyOf(arrivals, (int) (2 * rows)));
          }
          rows = 0;
          sum = 0;
        }
      };
    }
  }

  /**
   * Each window row's latency (microseconds) from the moment the watermark
   * that fired its window had left every source subtask (the latest of each
   * probe's first watermark at or past the window's last millisecond) to the
   * row's arrival at the sink, as `weir bench orders-window --rate R` has it.
   */
  static long[] windowLatenciesUs() {
    List<Long> out = new ArrayList<>();
    for (long[] rows : ARRIVALS) {
      for (int i = 0; i + 1 < rows.length; i += 2) {
        long fired = 0;
        boolean reached = true;
        for (long[] marks : WATERMARKS) {
          int j = 0;
          while (j + 1 < marks.length && marks[j] < rows[i]) j += 2;
          if (j + 1 >= marks.length) {
            reached = false;
            break;
          }
          fired = Math.max(fired, marks[j + 1]);
        }
        if (reached && !WATERMARKS.isEmpty()) out.add(Math.max(0, rows[i + 1] - fired) / 1000);
      }
    }
    return out.stream().mapToLong(Long::longValue).toArray();
  }

  /** Every sink subtask's latencies (microseconds), published when it closes. */
  static final List<long[]> LATENCIES_US = new ArrayList<>();

  /** The checksum sink of stamped rows, which also takes each row's latency. */
  public static class LatencySink implements Sink<Stamped> {
    public SinkWriter<Stamped> createWriter(WriterInitContext context) {
      return new SinkWriter<Stamped>() {
        long rows, sum;
        long[] latencies = new long[1 << 16];

        public void write(Stamped s, Context c) {
          if (rows == latencies.length) latencies = Arrays.copyOf(latencies, latencies.length * 2);
          latencies[(int) rows] = (System.nanoTime() - s.at) / 1000;
          rows++;
          sum += mix(s.hash);
        }

        public void flush(boolean endOfInput) {}

        public void close() {
          OUTPUTS.addAndGet(rows);
          CHECKSUM.addAndGet(sum);
          synchronized (LATENCIES_US) {
            LATENCIES_US.add(Arrays.copyOf(latencies, (int) rows));
          }
          rows = 0;
          sum = 0;
        }
      };
    }
  }

  /** The q-quantile of all latencies, in ms (nearest rank, as weir bench takes it). */
  static double latencyMs(long[] sorted, double q) {
    return sorted[(int) Math.round((sorted.length - 1) * q)] / 1000.0;
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

  static void build(String query, StreamExecutionEnvironment env, long events, double rate) {
    if (rate > 0 && query.equals("q1")) {
      bids(env, events).map(new PacedQ1(rate)).name("paced q1").rebalance()
          .sinkTo(new LatencySink()).name("checksum");
      return;
    }
    if (rate > 0 && query.equals("orders-window")) {
      DataStream<Order> orders = env.fromSequence(0, events - 1).name("order numbers")
          .map(FlinkBench::order).returns(Order.class).name("orders")
          .map(new PacedOrders(rate)).name("paced orders")
          .assignTimestampsAndWatermarks(
              WatermarkStrategy.<Order>forBoundedOutOfOrderness(ORDERS_DELAY).withTimestampAssigner((o, ts) -> o.time))
          .transform("watermark probe", TypeInformation.of(Order.class), new WatermarkProbe<Order>());
      OutputTag<Order> late = new OutputTag<Order>("late-orders") {};
      SingleOutputStreamOperator<RegionRow> rows = orders
          .keyBy(o -> o.region)
          .window(TumblingEventTimeWindows.of(Duration.ofMinutes(1)))
          .sideOutputLateData(late)
          .aggregate(new CountAndSum(), new ToRegionRow()).name("region window");
      countLate(rows, late);
      rows.sinkTo(new WindowLatencySink(60_000)).name("checksum");
      return;
    }
    if (rate > 0) throw new IllegalArgumentException("--rate: only q1 and orders-window measure latency");
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

  static final String USAGE = "usage: FlinkBench QUERY EVENTS PARALLELISM [CHECKPOINT_MS] [--rate R] [--buffer-timeout-ms MS]"
      + " [--state-backend hashmap|rocksdb [--state-dir DIR]]\n"
      + "  QUERY: orders-window | orders-dedup | orders-sliding | orders-payments | q0 | q1 | q2 | q5 | q7";

  public static void main(String[] args) throws Exception {
    List<String> positional = new ArrayList<>();
    double rate = 0;
    long bufferTimeoutMs = -1;
    String stateBackend = "hashmap";
    String stateDir = null;
    for (int i = 0; i < args.length; i++) {
      if (args[i].equals("--rate") && i + 1 < args.length) rate = Double.parseDouble(args[++i]);
      else if (args[i].equals("--buffer-timeout-ms") && i + 1 < args.length) bufferTimeoutMs = Long.parseLong(args[++i]);
      else if (args[i].equals("--state-backend") && i + 1 < args.length) stateBackend = args[++i];
      else if (args[i].equals("--state-dir") && i + 1 < args.length) stateDir = args[++i];
      else if (args[i].startsWith("--")) positional.add(null); // unknown flag: usage below
      else positional.add(args[i]);
    }
    if (positional.size() < 3 || positional.size() > 4 || positional.contains(null)
        || !(stateBackend.equals("hashmap") || stateBackend.equals("rocksdb"))) {
      System.err.println(USAGE);
      System.exit(2);
    }
    String query = positional.get(0);
    long events = Long.parseLong(positional.get(1));
    int parallelism = Integer.parseInt(positional.get(2));
    long checkpointMs = positional.size() > 3 ? Long.parseLong(positional.get(3)) : 0;
    if (events < 1 || parallelism < 1 || checkpointMs < 0 || !(rate >= 0) || Double.isInfinite(rate)
        || (rate > 0 && !query.equals("q1") && !query.equals("orders-window"))) {
      System.err.println(USAGE + "\n  EVENTS and PARALLELISM must be positive, CHECKPOINT_MS not negative,"
          + " R a positive number of events per second, for q1 and orders-window only");
      System.exit(2);
    }

    // A failure ends the run (no restarts). Checkpoints, when asked for, go to files
    // in a temporary directory: the join's and windows' state outgrows the default
    // in-memory checkpoint storage.
    Configuration conf = new Configuration();
    conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
    conf.set(StateBackendOptions.STATE_BACKEND, stateBackend);
    if (stateDir != null) conf.setString("state.backend.rocksdb.localdir", stateDir);
    Path checkpoints = null;
    if (checkpointMs > 0) {
      checkpoints = Files.createTempDirectory("weir-flink-checkpoints");
      conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
      conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, checkpoints.toUri().toString());
    }
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
    env.setParallelism(parallelism);
    if (bufferTimeoutMs >= 0) env.setBufferTimeout(bufferTimeoutMs);
    if (checkpointMs > 0) env.enableCheckpointing(checkpointMs);
    build(query, env, events, rate);

    long cpuBefore = processCpuNanos();
    JobExecutionResult result;
    try {
      result = env.execute("weir flink baseline " + query);
    } finally {
      deleteTree(checkpoints);
    }
    long cpuMs = (processCpuNanos() - cpuBefore) / 1_000_000;
    long netMs = Math.max(1, result.getNetRuntime());

    String latency = "";
    long[] all = Stream.concat(LATENCIES_US.stream(), Stream.of(windowLatenciesUs()))
        .flatMapToLong(Arrays::stream).sorted().toArray();
    if (all.length > 0) {
      latency = String.format(" latency_p50_ms=%.3f latency_p99_ms=%.3f", latencyMs(all, 0.5), latencyMs(all, 0.99));
    }
    System.out.printf("query=%s events=%d parallelism=%d net_ms=%d cpu_ms=%d events_per_s=%.0f outputs=%d checksum=%d%s%n",
        query, events, parallelism, netMs, cpuMs, events * 1000.0 / netMs, OUTPUTS.get(), CHECKSUM.get(), latency);
    if (LATE.get() > 0) {
      System.err.println("FlinkBench: " + LATE.get() + " late element(s) were dropped; WORKLOADS.md says there are none");
      System.exit(1);
    }
  }
}
