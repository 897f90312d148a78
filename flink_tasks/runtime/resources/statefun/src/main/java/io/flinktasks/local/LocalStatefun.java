/*
 * Launcher for the local flink-tasks runtime: Apache StateFun 3.3.0 in a Flink 1.16.2
 * MiniCluster inside this JVM. It holds no runtime logic; it only turns a flink-conf.yaml into
 * a local StreamExecutionEnvironment and hands it to StatefulFunctionsJob.
 */
package io.flinktasks.local;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.GlobalConfiguration;
import org.apache.flink.statefun.flink.core.StatefulFunctionsConfig;
import org.apache.flink.statefun.flink.core.StatefulFunctionsJob;
import org.apache.flink.statefun.flink.core.StatefulFunctionsUniverse;
import org.apache.flink.statefun.flink.core.StatefulFunctionsUniverseProvider;
import org.apache.flink.statefun.flink.core.spi.Modules;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/**
 * Usage: {@code LocalStatefun <confDir> [key=value ...]}.
 *
 * <p>Reads {@code <confDir>/flink-conf.yaml}, applies the extra {@code key=value} overrides (for
 * example {@code execution.savepoint.path=...}) and runs the StateFun job until it ends.
 */
public final class LocalStatefun {

  private LocalStatefun() {}

  /** Loads the SPI modules and the remote module.yaml named by statefun.remote.module-name. */
  public static final class ClassPathUniverseProvider implements StatefulFunctionsUniverseProvider {
    private static final long serialVersionUID = 1L;

    @Override
    public StatefulFunctionsUniverse get(ClassLoader classLoader, StatefulFunctionsConfig config) {
      return Modules.loadFromClassPath(config).createStatefulFunctionsUniverse();
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: LocalStatefun <confDir> [key=value ...]");
      System.exit(2);
    }
    Configuration conf = GlobalConfiguration.loadConfiguration(args[0]);
    for (int i = 1; i < args.length; i++) {
      String[] kv = args[i].split("=", 2);
      if (kv.length != 2) {
        throw new IllegalArgumentException("expected key=value, got: " + args[i]);
      }
      conf.setString(kv[0], kv[1]);
    }
    // Settings StateFun strictly requires (the same ones its Harness forces).
    conf.setString(
        "classloader.parent-first-patterns.additional",
        "org.apache.flink.statefun;org.apache.kafka;com.google.protobuf");
    conf.setString("execution.checkpointing.max-concurrent-checkpoints", "1");

    StreamExecutionEnvironment env =
        StreamExecutionEnvironment.createLocalEnvironment(
            conf.get(CoreOptions.DEFAULT_PARALLELISM), conf);
    env.configure(conf, Thread.currentThread().getContextClassLoader());

    StatefulFunctionsConfig statefunConfig = StatefulFunctionsConfig.fromFlinkConfiguration(conf);
    statefunConfig.setProvider(new ClassPathUniverseProvider());
    StatefulFunctionsJob.main(env, statefunConfig);
  }
}
