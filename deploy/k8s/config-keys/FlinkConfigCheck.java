// Checks flinkConfiguration entries the way Flink 2.2.1 and the Flink Kubernetes Operator 1.15.0 read
// them: every key must be a ConfigOption of the Flink jars on the classpath (flink-dist, flink-python,
// the metric reporter plugins), an option of the operator (operator-1.15.0.tsv, generated from its
// sources), a metric reporter's own option, or an S3 filesystem key; and every value must parse as that
// option's type (Flink's own Configuration parser: durations, memory sizes, enums, maps, numbers).
// State backends and HA modes are resolved as Flink resolves them, so `state.backend.type: rocksdbx` fails.
//
//   java -cp "flink-dist.jar:flink-python.jar:..." FlinkConfigCheck.java operator-1.15.0.tsv entries.tsv
//
// entries.tsv: one `label<TAB>key<TAB>value` per line. Output: one `label<TAB>verdict<TAB>key<TAB>detail`
// per entry; verdict is ok, unknown, deprecated or invalid. Exit status 0 unless the input is unreadable.
// Java 17 runs this file directly (no build step); tests/unit/test_k8s_flink_config.py calls it.

import java.io.File;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.*;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.FallbackKey;
import org.apache.flink.configuration.HighAvailabilityOptions;
import org.apache.flink.configuration.MetricOptions;
import org.apache.flink.runtime.jobmanager.HighAvailabilityMode;
import org.apache.flink.runtime.state.StateBackendLoader;

public class FlinkConfigCheck {
    /** A known key: the option that reads it, and why it should not be used (null: fine). */
    record Known(ConfigOption<?> option, String deprecation) {}

    // Keys of Flink's S3 filesystem plugins (flink-s3-fs-presto/-hadoop, not in flink-dist): the
    // factories read these and forward the rest of `s3.*` to the S3 client (Flink docs, "Amazon S3").
    static final Set<String> S3_KEYS = Set.of("s3.access-key", "s3.secret-key", "s3.endpoint",
            "s3.path.style.access", "s3.entropy.key", "s3.entropy.length", "s3.upload.min.part.size",
            "s3.upload.max.concurrent.uploads");
    // Options the Prometheus reporter reads itself (PrometheusReporterFactory ARG_PORT, ...).
    static final Map<String, ConfigOption<?>> PROMETHEUS = Map.of(
            "port", ConfigOptions.key("port").stringType().noDefaultValue(),
            "filterLabelValueCharacters", ConfigOptions.key("filterLabelValueCharacters").booleanType().noDefaultValue());
    static final Pattern REPORTER = Pattern.compile("metrics\\.reporter\\.([^.]+)\\.(.+)");

    public static void main(String[] args) throws Exception {
        Map<String, Known> known = new HashMap<>();
        Map<String, ConfigOption<?>> reporterOptions = new HashMap<>();
        for (String jar : System.getProperty("java.class.path").split(File.pathSeparator)) {
            scanJar(jar, known, reporterOptions);
        }
        List<Pattern> patterns = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(args[0]))) {
            if (line.isBlank() || line.startsWith("#")) continue;
            String[] f = line.split("\t");
            String deprecation = f[2].equals("current") ? null : f[2];
            if (f[0].contains("<")) {
                patterns.add(Pattern.compile(Pattern.quote(f[0]).replaceAll("<[^>]+>", "\\\\E[^.]+\\\\Q")));
                continue;
            }
            known.putIfAbsent(f[0], new Known(operatorOption(f[0], f[1]), deprecation));
        }
        for (String line : Files.readAllLines(Path.of(args[1]))) {
            if (line.isBlank()) continue;
            String[] f = line.split("\t", 3);
            System.out.println(f[0] + "\t" + check(f[1], f[2], known, reporterOptions, patterns));
        }
    }

    static String check(String key, String value, Map<String, Known> known,
                        Map<String, ConfigOption<?>> reporterOptions, List<Pattern> patterns) {
        ConfigOption<?> option;
        String deprecation = null;
        Matcher reporter = REPORTER.matcher(key);
        if (known.containsKey(key)) {
            option = known.get(key).option();
            deprecation = known.get(key).deprecation();
        } else if (reporter.matches() && reporterOptions.containsKey(reporter.group(2))) {
            option = reporterOptions.get(reporter.group(2));
        } else if (reporter.matches() && PROMETHEUS.containsKey(reporter.group(2))) {
            option = PROMETHEUS.get(reporter.group(2));
        } else if (S3_KEYS.contains(key) || patterns.stream().anyMatch(p -> p.matcher(key).matches())) {
            option = ConfigOptions.key(key).stringType().noDefaultValue();
        } else {
            return "unknown\t" + key + "\t";
        }
        String bareKey = reporter.matches() && !known.containsKey(key) ? reporter.group(2) : key;
        Configuration conf = Configuration.fromMap(Map.of(bareKey, value));
        try {
            Object parsed = conf.get(option);
            if (parsed == null) return "invalid\t" + key + "\tnot read under this key";
            if (key.equals("state.backend.type")) {
                StateBackendLoader.loadStateBackendFromConfig(conf, FlinkConfigCheck.class.getClassLoader(), null);
            }
            if (key.equals(HighAvailabilityOptions.HA_MODE.key())
                    && HighAvailabilityMode.fromConfig(conf) == HighAvailabilityMode.FACTORY_CLASS) {
                Class.forName(value, false, FlinkConfigCheck.class.getClassLoader());
            }
        } catch (Throwable t) {
            return "invalid\t" + key + "\t" + (t.getClass().getSimpleName() + ": " + t.getMessage()).replaceAll("\\s+", " ");
        }
        return deprecation == null ? "ok\t" + key + "\t" : "deprecated\t" + key + "\t" + deprecation;
    }

    /** An option of the operator's type, so Flink's parser checks the value; enums unknown here: String. */
    static ConfigOption<?> operatorOption(String key, String type) {
        ConfigOptions.OptionBuilder b = ConfigOptions.key(key);
        boolean list = type.startsWith("List<");
        String t = list ? type.substring(5, type.length() - 1) : type;
        ConfigOptions.TypedConfigOptionBuilder<?> typed = switch (t) {
            case "Boolean" -> b.booleanType();
            case "Integer" -> b.intType();
            case "Long" -> b.longType();
            case "Double" -> b.doubleType();
            case "Float" -> b.floatType();
            case "Duration" -> b.durationType();
            case "MemorySize" -> b.memoryType();
            case "Map" -> b.mapType();
            default -> b.stringType();
        };
        return list ? typed.asList().noDefaultValue() : typed.noDefaultValue();
    }

    static void scanJar(String jar, Map<String, Known> known, Map<String, ConfigOption<?>> reporterOptions) {
        if (!jar.endsWith(".jar")) return;
        try (JarFile jf = new JarFile(jar)) {
            for (JarEntry e : Collections.list(jf.entries())) {
                String n = e.getName();
                if (!n.startsWith("org/apache/flink/") || !n.endsWith(".class") || n.contains("$")) continue;
                String simple = n.substring(n.lastIndexOf('/') + 1);
                if (!(simple.contains("Option") || simple.contains("Config"))) continue;
                Field[] fields;
                try {
                    fields = Class.forName(n.replace('/', '.').replace(".class", ""), true,
                            FlinkConfigCheck.class.getClassLoader()).getDeclaredFields();
                } catch (Throwable t) {
                    continue;  // a class whose dependencies are not on this classpath holds no option we use
                }
                for (Field f : fields) {
                    if (!Modifier.isStatic(f.getModifiers()) || !ConfigOption.class.isAssignableFrom(f.getType())) continue;
                    try {
                        f.setAccessible(true);
                        ConfigOption<?> o = (ConfigOption<?>) f.get(null);
                        if (o == null) continue;
                        if (f.getDeclaringClass() == MetricOptions.class && !o.key().startsWith("metrics.")) {
                            reporterOptions.put(o.key(), o);  // metrics.reporter.<name>.<key>
                            continue;
                        }
                        if (!o.key().contains(".")) continue;  // table connector/format options, not cluster config
                        known.put(o.key(), new Known(o, f.isAnnotationPresent(Deprecated.class) ? "deprecated" : null));
                        for (FallbackKey k : o.fallbackKeys()) {
                            known.putIfAbsent(k.getKey(), new Known(o, k.isDeprecated() ? "deprecated-for:" + o.key() : null));
                        }
                    } catch (Throwable t) {
                        // an option that cannot be read is not one we can check against
                    }
                }
            }
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
