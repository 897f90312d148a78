/*
 * The JobManager of the local runtime's cluster mode: what Flink's
 * org.apache.flink.container.entrypoint.StandaloneApplicationClusterEntryPoint (the entry point of
 * the official apache/flink-statefun image) does, for a job class on the classpath. That class
 * lives in flink-container, which Flink 1.16 ships only inside flink-dist and does not publish to
 * Maven Central; its base class, ApplicationClusterEntryPoint, is in flink-clients.
 */
package io.flinktasks.local;

import org.apache.flink.client.deployment.application.ApplicationClusterEntryPoint;
import org.apache.flink.client.program.PackagedProgram;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.GlobalConfiguration;
import org.apache.flink.runtime.entrypoint.ClusterEntrypoint;
import org.apache.flink.runtime.jobgraph.SavepointRestoreSettings;
import org.apache.flink.runtime.resourcemanager.StandaloneResourceManagerFactory;
import org.apache.flink.runtime.util.EnvironmentInformation;
import org.apache.flink.runtime.util.JvmShutdownSafeguard;
import org.apache.flink.runtime.util.SignalHandler;
import org.apache.flink.statefun.flink.core.StatefulFunctionsJob;

/**
 * Usage: {@code StandaloneApplicationCluster <confDir> [key=value ...]}.
 *
 * <p>Runs a JobManager (dispatcher, standalone resource manager, REST) whose one application is
 * {@link StatefulFunctionsJob}; TaskManagers ({@code TaskManagerRunner}) connect to it.
 */
public final class StandaloneApplicationCluster extends ApplicationClusterEntryPoint {

  private StandaloneApplicationCluster(Configuration configuration, PackagedProgram program) {
    super(configuration, program, StandaloneResourceManagerFactory.getInstance());
  }

  @Override
  protected boolean supportsReactiveMode() {
    return true;
  }

  public static void main(String[] args) throws Exception {
    EnvironmentInformation.logEnvironmentInfo(LOG, "StandaloneApplicationCluster", args);
    SignalHandler.register(LOG);
    JvmShutdownSafeguard.installAsShutdownHook(LOG);
    if (args.length < 1) {
      System.err.println("usage: StandaloneApplicationCluster <confDir> [key=value ...]");
      System.exit(2);
    }
    Configuration configuration = GlobalConfiguration.loadConfiguration(args[0]);
    for (int i = 1; i < args.length; i++) {
      String[] kv = args[i].split("=", 2);
      if (kv.length != 2) {
        throw new IllegalArgumentException("expected key=value, got: " + args[i]);
      }
      configuration.setString(kv[0], kv[1]);
    }
    PackagedProgram program =
        PackagedProgram.newBuilder()
            .setEntryPointClassName(StatefulFunctionsJob.class.getName())
            .setConfiguration(configuration)
            .setSavepointRestoreSettings(SavepointRestoreSettings.fromConfiguration(configuration))
            .build();
    configureExecution(configuration, program);
    ClusterEntrypoint.runClusterEntrypoint(new StandaloneApplicationCluster(configuration, program));
  }
}
